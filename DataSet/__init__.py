"""Data sets: `create(name, root)` returns an object with `.train` and `.gallery`.

The data sets (cub, car, product, glyphs), their folders, official layouts and splits are
described once, in DataSet/specs.py. In every folder, the official code's `train.txt` /
`test.txt` list files take precedence when both are present.
"""
import os
from types import SimpleNamespace

from DataSet import readers, specs
from DataSet.image_list import ImageList
from DataSet.transforms import eval_transform, train_transform
from common.errors import InputError


def names():
    return specs.names()


def dataset_folder(name, root='DataSet'):
    """The folder holding data set `name` under `root`; InputError when it is not there."""
    spec = specs.spec_of(name)
    if name == 'glyphs':
        from DataSet.glyphs import ensure_glyphs
        return ensure_glyphs(root)
    for folder in spec.folders:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            return path
    tried = ' or '.join(os.path.join(root, f) for f in spec.folders)
    raise InputError(f'data set folder not found: {tried} (--data_root {root!r}); expected '
                     f'{spec.layout} there, or train.txt and test.txt list files')


def read_splits(name, root='DataSet'):
    """(train items, test items, description of what was read) for data set `name`."""
    folder = dataset_folder(name, root)
    if readers.has_list_files(folder):
        train, test = readers.read_list_files(folder)
        source = f'{folder} (train.txt / test.txt)'
    else:
        train, test = specs.spec_of(name).read_layout(folder)
        source = folder
    if not train or not test:
        raise InputError(f'{folder}: the split left no {"training" if not train else "test"} '
                         f'images')
    readers.check_images_exist(train + test, source)
    return train, test, source


def create(name, root='DataSet', width=227, origin_width=256, ratio=0.16,
           skip_bad_images=False, splits=None, bad_image_log=None):
    """`.train` (random crops and flips) and `.gallery` (centre crops) for data set `name`.
    `splits`: what read_splits returned, when the caller has read it already.
    `bad_image_log`: the file where --skip_bad_images names each image it skips."""
    train, test, source = splits or read_splits(name, root)
    train_images, train_labels = zip(*train)
    test_images, test_labels = zip(*test)
    return SimpleNamespace(
        name=name,
        source=source,
        train=ImageList(train_images, train_labels, train_transform(width, origin_width, ratio),
                        skip_bad_images, bad_image_log),
        gallery=ImageList(test_images, test_labels, eval_transform(width, origin_width),
                          skip_bad_images, bad_image_log),
    )
