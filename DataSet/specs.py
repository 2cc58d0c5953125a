"""Every fact about a data set, in one place: where it lives on disk (or how it is generated),
how it is split, how it is evaluated, how the network pools it, how long MMSI warms up on it,
whether a run needs pretrained weights on it, and the defaults of its own entry point.

The loaders (DataSet/__init__.py), the evaluation (evaluations/retrieval.py), the network
(models.create), the weights rule (models/pretrained.py) and the flags (utils/args.py) read
these specs; nothing else repeats them.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from DataSet import readers
from common.errors import InputError


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    name: str                 # the --data value
    folders: tuple            # candidate folder names under --data_root, first found wins
    read_layout: Callable     # folder -> (train items, test items) from the official layout
    layout: str               # what the official layout holds, for error messages
    split: str                # which classes train and which test
    recall_ks: tuple          # the K of the reported Recall@K
    pooling: str              # global pooling of the feature map: 'max' or 'max+avg'
    dict_min_classes: Optional[int]  # MMSI warm-up: classes the dictionary must hold first;
    #                                  None: the training classes minus WARMUP_SLACK
    real: bool                # photographs the user downloads: a run needs pretrained weights
    #                           unless --pretrained none (models/pretrained.py); False for the
    #                           embedded, generated sets, which start from random weights
    # An embedded data set's generator: --data_root -> its folder there, written on first use;
    # None: the user provides one of `folders`.
    generate: Optional[Callable[[str], str]] = None
    # Flag defaults of the data set's own entry point, if it has one (MMSI_SOP_train.py).
    run_defaults: dict = field(default_factory=dict)
    # The list files that take precedence over the layout, in the order the reader returns its
    # sets: (train, test), or (train, gallery, query) for a data set evaluated query against
    # gallery (In-Shop; the others query the test set against itself).
    list_files: tuple = readers.LIST_FILES

    @property
    def has_query(self):
        return len(self.list_files) == 3


# The generators import their modules when called: Glyphs' renderer loads matplotlib's fonts,
# which a run on a real data set never needs.
def generate_glyphs(root):
    from DataSet.glyphs import ensure_glyphs
    return ensure_glyphs(root)


def generate_glyphs_many(root):
    from DataSet.glyphs_many import ensure_glyphs_many
    return ensure_glyphs_many(root)


# Glyphs (the demo) has no official warm-up constant: update as soon as all but two of its
# training classes are in the dictionary.
WARMUP_SLACK = 2

SMALL_KS = (1, 2, 4, 8, 16, 32)

SPECS = {spec.name: spec for spec in (
    DatasetSpec(name='cub', folders=('CUB_200_2011',), read_layout=readers.read_cub_layout,
                layout='images.txt, image_class_labels.txt and images/',
                split='classes 1-100 / 101-200', recall_ks=SMALL_KS, pooling='max',
                dict_min_classes=98, real=True),
    DatasetSpec(name='car', folders=('Cars196',), read_layout=readers.read_cars_layout,
                layout='cars_annos.mat and car_ims/', split='classes 1-98 / 99-196',
                recall_ks=SMALL_KS, pooling='max', dict_min_classes=98, real=True),
    DatasetSpec(name='product', folders=('Products', 'Stanford_Online_Products'),
                read_layout=readers.read_sop_layout, layout='Ebay_train.txt and Ebay_test.txt',
                split='as Ebay_train.txt / Ebay_test.txt list them',
                recall_ks=(1, 10, 100, 1000), pooling='max+avg', dict_min_classes=1000,
                real=True,
                # MMSI_SOP_train.py: the official SOP settings; the 60k-image test set is also
                # evaluated every 100 iterations (the official code did it after every one).
                run_defaults=dict(data='product', loss='MS', margin=0.03, lr=1e-7,
                                  dict_min_classes=1000, eval_every=100, save_step=1,
                                  epochs=30)),
    # In-Shop Clothes Retrieval: 3,997 training items (25,882 images); 14,218 query images
    # against a 12,612-image gallery of the 3,985 other items. Folder: the official loader's
    # default (In_shop_clothes) or its class name (InShopClothes), which its
    # DataSet.create(name, root) joins to the root. Max pooling: the official network averages
    # only for 'product'. Warm-up: our choice, SOP's (the official code has no In-Shop run).
    DatasetSpec(name='shop', folders=('In_shop_clothes', 'InShopClothes'),
                read_layout=readers.read_inshop_layout,
                layout='list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/',
                split='items as list_eval_partition.txt assigns them (train / query + gallery)',
                recall_ks=(1, 10, 20, 30, 40, 50), pooling='max', dict_min_classes=1000,
                real=True, list_files=readers.QUERY_LIST_FILES),
    DatasetSpec(name='glyphs', folders=('Glyphs',), read_layout=readers.read_cub_layout,
                layout='the CUB layout (generated on first use)',
                split='classes 1-100 / 101-200', recall_ks=SMALL_KS, pooling='max',
                dict_min_classes=None, real=False, generate=generate_glyphs),
    # GlyphsMany (our extension): about 2,500 characters of several scripts, 4-8 images each,
    # in SOP's regime and on-disk layout, hence SOP's Recall Ks. Max pooling as for glyphs:
    # the images are Glyphs' (same renderer and jitter; only the number of classes is SOP's).
    # Warm-up 300 classes: an epoch (~1,250 training classes, ~7,500 images) pushes every class
    # once; with batch 40 / 5 instances (8 classes a batch, ~190 iterations an epoch) the
    # dictionary holds 300 classes after ~40 iterations, a fifth of the first epoch, where
    # SOP's 1000 of 11,318 would leave MMSI idle for most of a short run.
    DatasetSpec(name='glyphs_many', folders=('GlyphsMany',), read_layout=readers.read_sop_layout,
                layout='the SOP layout: Ebay_train.txt and Ebay_test.txt (generated on first use)',
                split='classes 1-C/2 / C/2+1-C (every other character of the list)',
                recall_ks=(1, 10, 100, 1000), pooling='max', dict_min_classes=300, real=False,
                generate=generate_glyphs_many),
)}


def names():
    return sorted(SPECS)


def spec_of(name):
    """The spec of data set `name`; InputError naming the known ones otherwise."""
    if name not in SPECS:
        raise InputError(f'--data {name!r} is unknown; choose one of {", ".join(names())}')
    return SPECS[name]


def is_real(name):
    """Whether data set `name` is a real one (a run on it needs pretrained weights); False for
    a name without a spec."""
    return name in SPECS and SPECS[name].real


def warmup_classes(name, num_train_classes):
    """The dictionary's default warm-up threshold for data set `name`, never more than the
    training set has."""
    official = SPECS[name].dict_min_classes if name in SPECS else None
    if official is None:
        official = num_train_classes - WARMUP_SLACK
    return min(official, num_train_classes)
