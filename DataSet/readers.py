"""Readers for the official on-disk layouts of the data sets.

Each reader takes the data set's folder and returns lists of (image path, label) pairs: train
and test, and for In-Shop train, gallery and query (the test split comes as two sets there).
Labels are the class ids exactly as the annotation files give them (In-Shop: the number in
`id_00000001`).
Problems are reported as InputError naming the file and what was expected.
"""
import os

from common.errors import InputError

# When present, these list files (the official code's format) take precedence over the layout.
LIST_FILES = ('train.txt', 'test.txt')
# In-Shop's list files in the official code (DataSet/In_shop_clothes.py), in the order
# train, gallery, query that read_inshop_layout also returns.
QUERY_LIST_FILES = ('train.txt', 'gallery.txt', 'query.txt')
INSHOP_PARTITION = 'list_eval_partition.txt'
INSHOP_STATUSES = ('train', 'gallery', 'query')


def read_cub_layout(folder):
    """CUB-200-2011 layout: `images.txt` (`<id> <path under images/>`) and
    `image_class_labels.txt` (`<id> <class id>`). First half of the classes trains, the
    second half tests (CUB: 1-100 / 101-200); the embedded Glyphs set uses the same layout."""
    paths = dict(_id_value_lines(_need_file(folder, 'images.txt', 'CUB-200-2011')))
    labels = _id_value_lines(_need_file(folder, 'image_class_labels.txt', 'CUB-200-2011'))
    items = []
    for image_id, label in labels:
        if image_id not in paths:
            raise InputError(f'{os.path.join(folder, "image_class_labels.txt")}: image id '
                             f'{image_id} is not listed in images.txt')
        items.append((os.path.join(folder, 'images', paths[image_id]), _int(label, folder)))
    return split_by_class(items)


def read_cars_layout(folder):
    """Cars-196 layout: `cars_annos.mat` with fields `relative_im_path` (e.g. car_ims/000001.jpg)
    and `class` (1..196); classes 1-98 train, 99-196 test."""
    from scipy.io import loadmat

    mat_path = _need_file(folder, 'cars_annos.mat', 'Cars-196')
    try:
        annotations = loadmat(mat_path, squeeze_me=True)['annotations']
        rel_paths = [str(p) for p in annotations['relative_im_path'].ravel()]
        classes = [int(c) for c in annotations['class'].ravel()]
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise InputError(f'{mat_path}: expected a MATLAB file with a struct array "annotations" '
                         f'holding fields relative_im_path and class ({err})') from None
    items = [(os.path.join(folder, p), c) for p, c in zip(rel_paths, classes)]
    return split_by_class(items)


def read_sop_layout(folder):
    """Stanford Online Products: `Ebay_train.txt` and `Ebay_test.txt`, a header line, then
    `<image_id> <class_id> <super_class_id> <path>` per line."""
    return tuple(_list_file(_need_file(folder, name, 'Stanford Online Products'), folder)
                 for name in ('Ebay_train.txt', 'Ebay_test.txt'))


def read_inshop_layout(folder):
    """In-Shop Clothes Retrieval (DeepFashion): `list_eval_partition.txt`, in the folder or in
    its `Eval/`: a count, the header `image_name item_id evaluation_status`, then
    `img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train|query|gallery` per image.
    Image paths are relative to the folder, or to its `Img/` (where the distribution's
    Img/img.zip unpacks). Returns (train, gallery, query); labels are the item numbers."""
    candidates = [os.path.join(folder, INSHOP_PARTITION),
                  os.path.join(folder, 'Eval', INSHOP_PARTITION)]
    path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
    if path is None:
        raise InputError(f'annotation file not found: {" or ".join(candidates)} (expected the '
                         f'In-Shop Clothes layout in {folder}, or the list files '
                         f'{", ".join(QUERY_LIST_FILES)})')
    lines = _lines(path)
    if len(lines) < 2 or not lines[0][1].isdigit():
        raise InputError(f'{path}: expected the number of images on line 1 and the header '
                         f'"image_name item_id evaluation_status" on line 2')
    rows = [(number, line.split()) for number, line in lines[2:]]
    if int(lines[0][1]) != len(rows):
        raise InputError(f'{path}: line 1 announces {lines[0][1]} images, {len(rows)} are listed '
                         f'(truncated file?)')
    base = _inshop_image_base(folder, rows)
    splits = {status: [] for status in INSHOP_STATUSES}
    for number, fields in rows:
        if (len(fields) != 3 or fields[2] not in splits or not fields[1].startswith('id_')
                or not fields[1][3:].isdigit()):
            raise InputError(f'{path}, line {number}: expected "<image path> id_<number> '
                             f'train|query|gallery", got {" ".join(fields)!r}')
        splits[fields[2]].append((os.path.join(base, fields[0]), int(fields[1][3:])))
    return tuple(splits[status] for status in INSHOP_STATUSES)


def _inshop_image_base(folder, rows):
    """The folder the listed paths are relative to: `folder`, or `folder/Img`, whichever holds
    the first listed image (`folder` when neither does: the missing images are then reported)."""
    if rows:
        for base in (folder, os.path.join(folder, 'Img')):
            if os.path.isfile(os.path.join(base, rows[0][1][0])):
                return base
    return folder


def read_list_files(folder, names=LIST_FILES):
    """The official code's list files (`train.txt` / `test.txt`; In-Shop `train.txt` /
    `gallery.txt` / `query.txt`): `<relative path> <label>` per line, or the four-column SOP
    form; an optional header line is skipped."""
    return tuple(_list_file(os.path.join(folder, name), folder) for name in names)


def has_list_files(folder, names=LIST_FILES):
    return all(os.path.isfile(os.path.join(folder, name)) for name in names)


def split_by_class(items):
    """Sort the distinct class ids; the first half trains, the second half tests."""
    classes = sorted({label for _, label in items})
    train_classes = set(classes[:len(classes) // 2])
    train = [item for item in items if item[1] in train_classes]
    test = [item for item in items if item[1] not in train_classes]
    return train, test


def check_images_exist(items, annotation):
    missing = [path for path, _ in items if not os.path.isfile(path)]
    if missing:
        raise InputError(f'{len(missing)} image(s) listed in {annotation} are missing, '
                         f'first: {missing[0]}')


def _need_file(folder, name, layout):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise InputError(f'annotation file not found: {path} (expected the {layout} layout in '
                         f'{folder}, or the list files {" and ".join(LIST_FILES)})')
    return path


def _lines(path):
    with open(path, encoding='utf-8') as f:
        return [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]


def _id_value_lines(path):
    """`<integer id> <value>` lines -> list of (id, value)."""
    pairs = []
    for number, line in _lines(path):
        fields = line.split(maxsplit=1)
        if len(fields) != 2 or not fields[0].isdigit():
            raise InputError(f'{path}, line {number}: expected "<id> <value>", got {line!r}')
        pairs.append((int(fields[0]), fields[1]))
    return pairs


def _list_file(path, folder):
    """`<path> <label>` or `<image_id> <class_id> <super_class_id> <path>` lines."""
    if not os.path.isfile(path):
        raise InputError(f'list file not found: {path}')
    items = []
    for number, line in _lines(path):
        parsed = _parse_list_line(line)
        if parsed is None:
            if number == 1:
                continue  # header line, e.g. "image_id class_id super_class_id path"
            raise InputError(f'{path}, line {number}: expected "<path> <label>" or '
                             f'"<image_id> <class_id> <super_class_id> <path>", got {line!r}')
        rel_path, label = parsed
        items.append((os.path.join(folder, rel_path), label))
    if not items:
        raise InputError(f'{path}: no images listed')
    return items


def _parse_list_line(line):
    """(relative path, label) from one list-file line, or None when it is not a data line."""
    fields = line.split()
    if len(fields) == 4 and all(_is_int(f) for f in fields[:3]):
        return fields[3], int(fields[1])
    if len(fields) >= 2 and _is_int(fields[-1]):
        rel_path, label = line.rsplit(maxsplit=1)
        return rel_path, int(label)
    return None


def _is_int(text):
    return text.lstrip('-').isdigit()


def _int(text, folder):
    try:
        return int(text)
    except ValueError:
        raise InputError(f'{folder}: expected an integer class id, got {text!r}') from None
