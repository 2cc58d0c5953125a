"""Data sets: `create(name, root)` returns an object with `.train` and `.gallery`.

| name      | folder under root                          | read from                                  |
|-----------|--------------------------------------------|--------------------------------------------|
| cub       | CUB_200_2011                               | images.txt + image_class_labels.txt        |
| car       | Cars196                                    | cars_annos.mat + car_ims/                  |
| product   | Products or Stanford_Online_Products       | Ebay_train.txt + Ebay_test.txt             |
| glyphs    | Glyphs (generated on first use)            | CUB layout                                 |

In every folder, the official code's `train.txt` / `test.txt` list files take precedence when
both are present.
"""
import os
from types import SimpleNamespace

from DataSet import readers
from DataSet.image_list import ImageList
from DataSet.transforms import eval_transform, train_transform
from utils.errors import InputError

# name -> (candidate folder names under root, reader of the official layout, layout description)
DATASETS = {
    'cub': (('CUB_200_2011',), readers.read_cub_layout,
            'images.txt, image_class_labels.txt and images/'),
    'car': (('Cars196',), readers.read_cars_layout, 'cars_annos.mat and car_ims/'),
    'product': (('Products', 'Stanford_Online_Products'), readers.read_sop_layout,
                'Ebay_train.txt and Ebay_test.txt'),
    'glyphs': (('Glyphs',), readers.read_cub_layout, 'the CUB layout (generated on first use)'),
}


def names():
    return sorted(DATASETS)


def dataset_folder(name, root='DataSet'):
    """The folder holding data set `name` under `root`; InputError when it is not there."""
    if name not in DATASETS:
        raise InputError(f'--data {name!r} is unknown; choose one of {", ".join(names())}')
    folders, _, layout = DATASETS[name]
    if name == 'glyphs':
        from DataSet.glyphs import ensure_glyphs
        return ensure_glyphs(root)
    for folder in folders:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            return path
    tried = ' or '.join(os.path.join(root, f) for f in folders)
    raise InputError(f'data set folder not found: {tried} (--data_root {root!r}); expected '
                     f'{layout} there, or train.txt and test.txt list files')


def read_splits(name, root='DataSet'):
    """(train items, test items, description of what was read) for data set `name`."""
    folder = dataset_folder(name, root)
    _, read_layout, _ = DATASETS[name]
    if readers.has_list_files(folder):
        train, test = readers.read_list_files(folder)
        source = f'{folder} (train.txt / test.txt)'
    else:
        train, test = read_layout(folder)
        source = folder
    if not train or not test:
        raise InputError(f'{folder}: the split left no {"training" if not train else "test"} '
                         f'images')
    readers.check_images_exist(train + test, source)
    return train, test, source


def create(name, root='DataSet', width=227, origin_width=256, ratio=0.16,
           skip_bad_images=False):
    """`.train` (random crops and flips) and `.gallery` (centre crops) for data set `name`."""
    train, test, source = read_splits(name, root)
    train_images, train_labels = zip(*train)
    test_images, test_labels = zip(*test)
    return SimpleNamespace(
        name=name,
        source=source,
        train=ImageList(train_images, train_labels, train_transform(width, origin_width, ratio),
                        skip_bad_images),
        gallery=ImageList(test_images, test_labels, eval_transform(width, origin_width),
                          skip_bad_images),
    )
