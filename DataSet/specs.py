"""Every fact about a data set, in one place: where it lives on disk, how it is split, how it
is evaluated, how the network pools it, how long MMSI warms up on it, and the defaults of its
own entry point.

The loaders (DataSet/__init__.py), the evaluation (evaluations/retrieval.py), the network
(models.create) and the flags (utils/args.py) read these specs; nothing else repeats them.
"""
from typing import Callable, NamedTuple, Optional

from DataSet import readers
from common.errors import InputError


class DatasetSpec(NamedTuple):
    name: str
    folders: tuple            # candidate folder names under --data_root, first found wins
    read_layout: Callable     # folder -> (train items, test items) from the official layout
    layout: str               # what the official layout holds, for error messages
    split: str                # which classes train and which test
    recall_ks: tuple          # the K of the reported Recall@K
    pooling: str              # global pooling of the feature map: 'max' or 'max+avg'
    dict_min_classes: Optional[int]  # MMSI warm-up: classes the dictionary must hold first;
    #                                  None: the training classes minus WARMUP_SLACK
    run_defaults: dict        # flag defaults of the data set's own entry point, if it has one


# Glyphs (the demo) has no official warm-up constant: update as soon as all but two of its
# training classes are in the dictionary.
WARMUP_SLACK = 2

SMALL_KS = (1, 2, 4, 8, 16, 32)

SPECS = {spec.name: spec for spec in (
    DatasetSpec('cub', ('CUB_200_2011',), readers.read_cub_layout,
                'images.txt, image_class_labels.txt and images/', 'classes 1-100 / 101-200',
                SMALL_KS, 'max', 98, {}),
    DatasetSpec('car', ('Cars196',), readers.read_cars_layout, 'cars_annos.mat and car_ims/',
                'classes 1-98 / 99-196', SMALL_KS, 'max', 98, {}),
    DatasetSpec('product', ('Products', 'Stanford_Online_Products'), readers.read_sop_layout,
                'Ebay_train.txt and Ebay_test.txt', 'as Ebay_train.txt / Ebay_test.txt list them',
                (1, 10, 100, 1000), 'max+avg', 1000,
                # MMSI_SOP_train.py: the official SOP settings; the 60k-image test set is also
                # evaluated every 100 iterations (the official code did it after every one).
                dict(data='product', loss='MS', margin=0.03, lr=1e-7, dict_min_classes=1000,
                     eval_every=100, save_step=1, epochs=30)),
    DatasetSpec('glyphs', ('Glyphs',), readers.read_cub_layout,
                'the CUB layout (generated on first use)', 'classes 1-100 / 101-200',
                SMALL_KS, 'max', None, {}),
)}


def names():
    return sorted(SPECS)


def spec_of(name):
    """The spec of data set `name`; InputError naming the known ones otherwise."""
    if name not in SPECS:
        raise InputError(f'--data {name!r} is unknown; choose one of {", ".join(names())}')
    return SPECS[name]


def warmup_classes(name, num_train_classes):
    """The dictionary's default warm-up threshold for data set `name`, never more than the
    training set has."""
    official = SPECS[name].dict_min_classes if name in SPECS else None
    if official is None:
        official = num_train_classes - WARMUP_SLACK
    return min(official, num_train_classes)
