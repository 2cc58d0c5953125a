"""Data sets: `create(name, root)` returns a `Dataset`: `.train`, `.gallery`, `.query` and
`.holdout`.

`.gallery` is always the set the evaluation retrieves from. `.query` is None where the gallery
is its own query set (each image queries all the others: cub, car, product, glyphs,
glyphs_many) and the
query images where the data set has its own (In-Shop, `shop`: query against gallery, nothing
excluded). evaluations.split_metrics takes both cases.

The data sets, their folders, official layouts and splits are described once, in
DataSet/specs.py. In every folder, the official code's list files (`train.txt` / `test.txt`;
In-Shop `train.txt` / `gallery.txt` / `query.txt`) take precedence when all are present.
"""
import os
from dataclasses import dataclass
from typing import NamedTuple, Optional

from DataSet import readers, specs
from DataSet.image_list import MAX_IMAGE_PIXELS, ImageList
from DataSet.transforms import eval_transform, train_transform
from common.errors import InputError


def names():
    return specs.names()


def dataset_folder(name, root='DataSet'):
    """The folder holding data set `name` under `root`; InputError when it is not there."""
    spec = specs.spec_of(name)
    if spec.generate is not None:
        return spec.generate(root)
    for folder in spec.folders:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            return path
    tried = ' or '.join(os.path.join(root, f) for f in spec.folders)
    raise InputError(f'data set folder not found: {tried} (--data_root {root!r}); expected '
                     f'{spec.layout} there, or the list files {", ".join(spec.list_files)}')


class Splits(NamedTuple):
    train: list              # (path, label) pairs
    gallery: list
    query: Optional[list]    # None: the gallery queries itself
    source: str              # what was read, for the log
    # --holdout_classes: the training classes set aside for model selection (None: none);
    # they are not in `train`. Set by utils/config.py (hold_out_classes), not by read_splits.
    holdout: Optional[list] = None
    # --label_noise: (path, true label, given label) of each training image whose label in
    # `train` was changed (DataSet/noise.py); empty without noise.
    relabelled: tuple = ()
    # lines about the split for the console and log.txt (readers.Sets.notes: a layout split
    # by class announces classes other than the official ones)
    notes: tuple = ()


def hold_out_classes(train, count):
    """(remaining training items, holdout items): the last `count` training classes in the
    order of their sorted labels leave `train` (order of the items kept); holdout None when
    `count` is 0."""
    if not count:
        return list(train), None
    held = set(sorted({label for _, label in train})[-count:])
    return ([item for item in train if item[1] not in held],
            [item for item in train if item[1] in held])


def read_splits(name, root='DataSet'):
    """The Splits of data set `name`: its list files when present, else its official layout."""
    spec = specs.spec_of(name)
    folder = dataset_folder(name, root)
    if readers.has_list_files(folder, spec.list_files):
        sets = readers.read_list_files(folder, spec.list_files)
        source = f'{folder} ({" / ".join(spec.list_files)})'
    else:
        sets = spec.read_layout(folder)
        source = folder
    train, gallery, query = (*sets, None) if len(sets) == 2 else sets
    for items, what in ((train, 'training'), (gallery, 'test' if query is None else 'gallery'),
                        (query, 'query')):
        if items is not None and not items:
            raise InputError(f'{folder}: the split left no {what} images')
    readers.check_images_exist(train + gallery + (query or []), source)
    return Splits(train, gallery, query, source, notes=sets.notes)


@dataclass(frozen=True)
class Dataset:
    """The image sets of a run, each an ImageList of `(image, label)`."""
    name: str
    source: str                        # what was read, for the log
    train: ImageList                   # random crops and flips
    gallery: ImageList                 # the set the evaluation retrieves from (centre crops)
    query: Optional[ImageList] = None  # the query set where the data set has one (In-Shop);
    #                                    None: the gallery queries itself
    holdout: Optional[ImageList] = None  # --holdout_classes' images (centre crops); None without


def create(name, root='DataSet', width=227, origin_width=256, ratio=0.16, splits=None,
           max_image_pixels=MAX_IMAGE_PIXELS):
    """The Dataset of data set `name`: `.query` None unless the data set has a query set of its
    own, `.holdout` None unless `splits` holds held-out training classes.
    `splits`: what read_splits returned, when the caller has read it already.
    `max_image_pixels`: the largest image, in pixels, that its sets read (--max_image_pixels)."""
    splits = splits or read_splits(name, root)

    def image_list(items, transform):
        if items is None:
            return None
        images, labels = zip(*items)
        return ImageList(images, labels, transform, max_image_pixels)

    return Dataset(
        name=name,
        source=splits.source,
        train=image_list(splits.train, train_transform(width, origin_width, ratio)),
        gallery=image_list(splits.gallery, eval_transform(width, origin_width)),
        query=image_list(splits.query, eval_transform(width, origin_width)),
        holdout=image_list(splits.holdout, eval_transform(width, origin_width)),
    )
