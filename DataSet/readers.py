"""Readers for the official on-disk layouts of the data sets.

Each reader takes the data set's folder and returns its sets of (image path, label) pairs as a
`Sets`: train and test, and for In-Shop train, gallery and query (the test split comes as two
sets there). Labels are the class ids exactly as the annotation files give them (In-Shop: the
number in `id_00000001`).

Before returning, every reader checks its annotations (docs/reliability.md, "Annotations"):
each image id and path listed once, every image with one path and one label, no image in two
sets, labels integers in the data set's range. A problem is an InputError naming the file, the
line and what was expected. The layouts split by class say so in `Sets.notes` when the classes
found are not the official ones.
"""
import errno
import math
import numbers
import os
from collections import Counter
from typing import NamedTuple

import numpy as np

from DataSet.annotation_files import (integer, label, label_range, refuse_images_in_two_sets,
                                      refuse_repeated, text_lines)
from common.errors import InputError

# When present, these list files (the official code's format) take precedence over the layout.
LIST_FILES = ('train.txt', 'test.txt')
# In-Shop's list files in the official code (DataSet/In_shop_clothes.py), in the order
# train, gallery, query that read_inshop_layout also returns.
QUERY_LIST_FILES = ('train.txt', 'gallery.txt', 'query.txt')
INSHOP_PARTITION = 'list_eval_partition.txt'
INSHOP_STATUSES = ('train', 'gallery', 'query')
SET_NAMES = {2: ('training', 'test'), 3: ('training', 'gallery', 'query')}

# The official classes (ids 1..N) of the layouts split by class: the range their labels must
# lie in, and the classes a run is told it differs from.
CUB_CLASSES = 200  # CUB-200-2011, and the embedded Glyphs, written in its layout
CARS_CLASSES = 196
CARS_EXPECTED = ('a MATLAB file with a struct array "annotations" holding fields '
                 'relative_im_path and class')
HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'  # MATLAB v7.3 files are HDF5 after a 512-byte header
LIST_LINE = '"<path> <label>" or "<image_id> <class_id> <super_class_id> <path>"'


class Sets(tuple):
    """What a reader returns: (train, test) or (train, gallery, query), each a list of
    (image path, label); `notes`: lines about them for the console and the run's log."""

    def __new__(cls, sets, notes=()):
        self = super().__new__(cls, sets)
        self.notes = tuple(notes)
        return self


def read_cub_layout(folder):
    """CUB-200-2011 layout: `images.txt` (`<id> <path under images/>`) and
    `image_class_labels.txt` (`<id> <class id 1-200>`), one line per image each. First half of
    the classes trains, the second half tests (CUB: 1-100 / 101-200); the embedded Glyphs set
    uses the same layout. `train_test_split.txt`, the classification split, is not read."""
    images_file = _need_file(folder, 'images.txt', 'CUB-200-2011')
    labels_file = _need_file(folder, 'image_class_labels.txt', 'CUB-200-2011')
    paths = _id_lines(images_file, 'path')
    classes = _id_lines(labels_file, 'class id')
    refuse_repeated(images_file, [(os.path.normpath(path), f'line {number}')
                                  for path, number in paths.values()],
                    lambda path: path, 'each image once')
    items = []
    for image_id, (text, number) in classes.items():
        where = f'{labels_file}, line {number}'
        if image_id not in paths:
            raise InputError(f'{where}: image id {image_id} is not listed in images.txt; '
                             f'expected the ids of images.txt')
        items.append((os.path.join(folder, 'images', paths[image_id][0]),
                      label(text, where, 1, CUB_CLASSES)))
    unlabelled = [(image_id, number) for image_id, (_, number) in paths.items()
                  if image_id not in classes]
    if unlabelled:
        image_id, number = unlabelled[0]
        raise InputError(f'{labels_file}: no class for {len(unlabelled)} image(s) of '
                         f'images.txt, first: id {image_id} (images.txt, line {number}); '
                         f'expected a line "<id> <class id>" for every image (a file cut '
                         f'short?)')
    return split_by_class(items, folder, 'CUB-200-2011', CUB_CLASSES)


def read_cars_layout(folder):
    """Cars-196 layout: `cars_annos.mat`, a struct array `annotations` with fields
    `relative_im_path` (e.g. car_ims/000001.jpg) and `class` (1..196), one element per image;
    classes 1-98 train, 99-196 test. Its field `test`, the classification split, is not read."""
    mat_path = _need_file(folder, 'cars_annos.mat', 'Cars-196')
    rel_paths, classes = _cars_annotations(mat_path)
    items = []
    for index, (rel_path, value) in enumerate(zip(rel_paths, classes), 1):
        where = f'{mat_path}, annotation {index}'
        if not isinstance(rel_path, str) or not rel_path.strip():
            raise InputError(f'{where}: no image path in relative_im_path; expected one such '
                             f'as car_ims/000001.jpg')
        items.append((os.path.join(folder, rel_path), _cars_class(value, where)))
    refuse_repeated(mat_path, [(os.path.normpath(path), f'annotation {index}')
                               for index, path in enumerate(rel_paths, 1)],
                    lambda path: path, 'each image once')
    return split_by_class(items, folder, 'Cars-196', CARS_CLASSES)


def read_sop_layout(folder):
    """Stanford Online Products: `Ebay_train.txt` and `Ebay_test.txt`, a header line, then
    `<image_id> <class_id> <super_class_id> <path>` per line. As in the official split, no
    class is in both."""
    files = [_need_file(folder, name, 'Stanford Online Products')
             for name in ('Ebay_train.txt', 'Ebay_test.txt')]
    rows = _list_sets(files, lowest_label=1)
    first_line = {}
    for number, _, class_id in rows[0]:
        first_line.setdefault(class_id, number)
    for number, _, class_id in rows[1]:
        if class_id in first_line:
            raise InputError(f'{files[1]}, line {number}: class {class_id} is also a training '
                             f'class ({files[0]}, line {first_line[class_id]}); expected the '
                             f'test classes apart from the training classes')
    return Sets(_items(folder, set_rows) for set_rows in rows)


def read_inshop_layout(folder):
    """In-Shop Clothes Retrieval (DeepFashion): `list_eval_partition.txt`, in the folder or in
    its `Eval/`: a count, the header `image_name item_id evaluation_status`, then
    `img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train|query|gallery` per image.
    Image paths are relative to the folder, or to its `Img/` (where the distribution's
    Img/img.zip unpacks). Returns (train, gallery, query); labels are the item numbers. A
    training item is never queried nor in the gallery, and every query item has a gallery
    image (docs/reliability.md says why such a query is refused)."""
    candidates = [os.path.join(folder, INSHOP_PARTITION),
                  os.path.join(folder, 'Eval', INSHOP_PARTITION)]
    path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
    if path is None:
        raise InputError(f'annotation file not found: {" or ".join(candidates)} (expected the '
                         f'In-Shop Clothes layout in {folder}, or the list files '
                         f'{", ".join(QUERY_LIST_FILES)})')
    lines = text_lines(path)
    count = integer(lines[0][1]) if lines else None
    if len(lines) < 2 or count is None:
        raise InputError(f'{path}: expected the number of images on line 1 and the header '
                         f'"image_name item_id evaluation_status" on line 2')
    if count != len(lines) - 2:
        raise InputError(f'{path}: line 1 announces {lines[0][1]} images, {len(lines) - 2} are '
                         f'listed (truncated file?)')
    rows = []
    for number, line in lines[2:]:
        fields = line.split()
        item = (integer(fields[1][3:]) if len(fields) == 3 and fields[1].startswith('id_')
                else None)
        if not item or fields[2] not in INSHOP_STATUSES:
            raise InputError(f'{path}, line {number}: expected "<image path> id_<number> '
                             f'train|query|gallery" with the number {label_range(1)}, got '
                             f'{" ".join(fields)!r}')
        rows.append(_PartitionRow(number, fields[0], fields[1], item, fields[2]))
    # an image in two sets is an image listed twice here
    refuse_repeated(path, [(os.path.normpath(row.path), f'line {row.number}') for row in rows],
                    lambda image: image, 'each image once, in one set')
    _refuse_training_items_in_the_test(path, rows)
    gallery_items = {row.item for row in rows if row.status == 'gallery'}
    for row in rows:
        if row.status == 'query' and row.item not in gallery_items:
            raise InputError(_query_without_gallery(f'{path}, line {row.number}',
                                                    f'item {row.written}'))
    base = _inshop_image_base(folder, rows[0].path if rows else None)
    return Sets([(os.path.join(base, row.path), row.item) for row in rows if row.status == status]
                for status in INSHOP_STATUSES)


class _PartitionRow(NamedTuple):
    number: int    # line number in list_eval_partition.txt
    path: str      # the image, relative to the folder or to its Img/
    written: str   # the item id as written, id_00000002
    item: int      # its number, the label
    status: str    # train, gallery or query


def _refuse_training_items_in_the_test(path, rows):
    first_training_line = {}
    for row in rows:
        if row.status == 'train':
            first_training_line.setdefault(row.item, row.number)
    for row in rows:
        if row.status != 'train' and row.item in first_training_line:
            raise InputError(f'{path}, line {row.number}: item {row.written} is a {row.status} '
                             f'item here and a training item on line '
                             f'{first_training_line[row.item]}; expected the training items '
                             f'apart from the query and gallery items')


def _query_without_gallery(where, what):
    return (f'{where}: query {what} has no gallery image; expected every query item in the '
            f'gallery too (its queries could never be answered)')


def _inshop_image_base(folder, first_path):
    """The folder the listed paths are relative to: `folder`, or `folder/Img`, whichever holds
    the first listed image (`folder` when neither does: the missing images are then reported)."""
    if first_path is not None:
        for base in (folder, os.path.join(folder, 'Img')):
            if os.path.isfile(os.path.join(base, first_path)):
                return base
    return folder


def read_list_files(folder, names=LIST_FILES):
    """The official code's list files (`train.txt` / `test.txt`; In-Shop `train.txt` /
    `gallery.txt` / `query.txt`): `<relative path> <label>` per line, or the four-column SOP
    form; an optional header line (no number, no path) is skipped. Labels count from 0 (the
    official code's files may), and each file may number its classes on its own: only images
    are compared between files. In-Shop's: every query label has a gallery image."""
    files = [os.path.join(folder, name) for name in names]
    rows = _list_sets(files, lowest_label=0)
    if len(files) == 3:
        gallery_labels = {class_id for _, _, class_id in rows[1]}
        for number, _, class_id in rows[2]:
            if class_id not in gallery_labels:
                raise InputError(_query_without_gallery(f'{files[2]}, line {number}',
                                                        f'label {class_id}'))
    return Sets(_items(folder, set_rows) for set_rows in rows)


def has_list_files(folder, names=LIST_FILES):
    return all(os.path.isfile(os.path.join(folder, name)) for name in names)


def _list_sets(files, lowest_label):
    """The rows of each list file (_list_file_rows), no image in two of them."""
    rows = [_list_file_rows(path, lowest_label) for path in files]
    refuse_images_in_two_sets(
        (name, path, [(rel_path, f'line {number}') for number, rel_path, _ in set_rows])
        for name, path, set_rows in zip(SET_NAMES[len(files)], files, rows))
    return rows


def _list_file_rows(path, lowest_label):
    """(line number, relative path, label) of each image of a list file: `<path> <label>` or
    `<image_id> <class_id> <super_class_id> <path>` lines, after an optional header line (no
    number, no path). InputError for another line, a label below `lowest_label` or beyond
    64 bits, and an image id or a path listed twice."""
    if not os.path.isfile(path):
        raise InputError(f'list file not found: {path}')
    rows, image_ids = [], []
    for index, (number, line) in enumerate(text_lines(path)):
        fields = line.split()
        if index == 0 and not any(field.isascii() and field.isdigit() for field in fields) \
                and not any(mark in line for mark in '/.'):
            continue  # header line (no number, no path), e.g. "image_id class_id ... path"
        if len(fields) == 4 and all(integer(field) is not None for field in fields[:3]):
            image_ids.append((integer(fields[0]), f'line {number}'))
            rel_path, text = fields[3], fields[1]
        else:
            rel_path, text = line.rsplit(maxsplit=1) if len(fields) >= 2 else (line, '')
        class_id = integer(text)
        if class_id is None or class_id < lowest_label:
            raise InputError(f'{path}, line {number}: expected {LIST_LINE} with the label '
                             f'{label_range(lowest_label)}, got {line!r}')
        rows.append((number, rel_path, class_id))
    if not rows:
        raise InputError(f'{path}: no images listed')
    refuse_repeated(path, image_ids, lambda image_id: f'image id {image_id}',
                    'each image id once')
    refuse_repeated(path, [(os.path.normpath(rel_path), f'line {number}')
                           for number, rel_path, _ in rows], lambda image: image,
                    'each image once')
    return rows


def _items(folder, rows):
    return [(os.path.join(folder, rel_path), class_id) for _, rel_path, class_id in rows]


def split_by_class(items, folder, layout, official_classes):
    """Sort the distinct class ids; the first half trains, the second half tests. The note
    announces the split when the classes are not the official 1..`official_classes`."""
    classes = sorted({class_id for _, class_id in items})
    train_classes, test_classes = classes[:len(classes) // 2], classes[len(classes) // 2:]
    training = set(train_classes)
    train = [item for item in items if item[1] in training]
    test = [item for item in items if item[1] not in training]
    notes = []
    if classes != list(range(1, official_classes + 1)):
        notes.append(f'{folder}: {len(classes)} classes found ({class_ranges(classes)}), not '
                     f'the {official_classes} of {layout}: training on the '
                     f'{len(train_classes)} classes {class_ranges(train_classes)}, testing on '
                     f'the {len(test_classes)} classes {class_ranges(test_classes)}')
    return Sets((train, test), notes)


def class_ranges(classes, most=6):
    """Sorted class ids as runs: '1-25', '1-6, 101-106'; past `most` runs, the first ones,
    '...' and the last one."""
    runs = []
    for class_id in classes:
        if runs and class_id == runs[-1][1] + 1:
            runs[-1][1] = class_id
        else:
            runs.append([class_id, class_id])
    text = [str(first) if first == last else f'{first}-{last}' for first, last in runs]
    if len(text) > most:
        text = text[:most - 1] + ['...', text[-1]]
    return ', '.join(text)


def check_images_exist(items, annotation):
    """InputError when a listed image is not a regular file: missing, a directory, a symbolic
    link loop, a broken link, a FIFO (which would block the loader) ..."""
    problems = [(path, _why_not_a_file(path)) for path, _ in items if not os.path.isfile(path)]
    if not problems:
        return
    kinds = Counter(kind for _, kind in problems)
    if set(kinds) == {'missing'}:
        raise InputError(f'{len(problems)} image(s) listed in {annotation} are missing, '
                         f'first: {problems[0][0]}')
    summary = ', '.join(f'{kind}: {count}' for kind, count in kinds.items())
    path, kind = problems[0]
    raise InputError(f'{len(problems)} image(s) listed in {annotation} are not image files '
                     f'({summary}), first: {path} ({kind})')


def _why_not_a_file(path):
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return 'a symbolic link loop'
        if os.path.islink(path):
            return f'a broken symbolic link to {os.readlink(path)}'
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return 'missing'
        return f'not accessible: {err.strerror}'
    return 'a directory' if os.path.isdir(path) else 'not a regular file'


def _need_file(folder, name, layout):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise InputError(f'annotation file not found: {path} (expected the {layout} layout in '
                         f'{folder}, or the list files {" and ".join(LIST_FILES)})')
    return path


def _id_lines(path, what):
    """`<id> <what>` lines -> {id: (value, line number)} in file order; InputError for a line
    of another form and for an id listed twice."""
    table = {}
    for number, line in text_lines(path):
        fields = line.split(maxsplit=1)
        image_id = integer(fields[0]) if len(fields) == 2 else None
        if image_id is None:
            raise InputError(f'{path}, line {number}: expected "<id> <{what}>" with the id an '
                             f'integer written with the digits 0-9, got {line!r}')
        if image_id in table:
            raise InputError(f'{path}, line {number}: image id {image_id} is listed again '
                             f'(first on line {table[image_id][1]}); expected each image id '
                             f'once')
        table[image_id] = (fields[1], number)
    return table


def _cars_annotations(mat_path):
    """(relative paths, classes) of cars_annos.mat, one per annotation, as scipy reads them.
    InputError for an empty, cut-short, MATLAB v7.3 or otherwise unreadable file."""
    from scipy.io import loadmat

    try:
        with open(mat_path, 'rb') as f:
            head = f.read(520)
    except OSError as err:
        raise InputError(f'{mat_path}: cannot read it ({err.strerror})') from None
    if not head:
        raise InputError(f'{mat_path}: the file is empty; expected {CARS_EXPECTED}')
    if HDF5_SIGNATURE in (head[:8], head[512:520]):
        raise InputError(f"{mat_path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; "
                         f"save it again in the v7 format (in MATLAB or Octave: load it, then "
                         f"save('cars_annos.mat', 'annotations', '-v7'))")
    try:
        contents = loadmat(mat_path, squeeze_me=True)
    except Exception as err:  # scipy raises OSError, IndexError, ValueError ... on damaged bytes
        reason = ' '.join(f'{type(err).__name__}: {err}'.split())
        raise InputError(f'{mat_path}: cannot be read as a MATLAB file ({reason}): cut short '
                         f'or damaged? expected {CARS_EXPECTED}') from None
    try:
        annotations = contents['annotations']
        return (list(annotations['relative_im_path'].ravel()),
                list(annotations['class'].ravel()))
    except (KeyError, ValueError, TypeError, IndexError, AttributeError):
        raise InputError(f'{mat_path}: expected {CARS_EXPECTED}') from None


def _cars_class(value, where):
    """The class of one annotation: a finite whole number in 1..196, stored as any numeric
    type."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            found = 'no class' if value.size == 0 else f'{value.size} class values'
            raise InputError(f'{where}: {found}; expected one class, '
                             f'{label_range(1, CARS_CLASSES)}')
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value != int(value)
            or not 1 <= value <= CARS_CLASSES):
        raise InputError(f'{where}: expected a class, {label_range(1, CARS_CLASSES)}, got '
                         f'{value!r}')
    return int(value)
