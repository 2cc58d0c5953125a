"""A labelled list of image files, the one Dataset class every data set uses."""
import warnings
from collections import defaultdict

import torch
from PIL import Image
from torch.utils.data import Dataset

from utils.errors import InputError


class ImageList(Dataset):
    """Images from a list of paths with integer labels.

    Attributes relied on elsewhere: `images` (paths), `labels` (ints, as the annotation gives
    them) and `Index` (label -> list of indices), which the K-P samplers read.

    An item is addressed either by its index or by `(index, seed)`: with a seed the random
    transform draws from a generator seeded with it, so a sample's augmentation depends only on
    what the sampler asked for, not on the worker that loads it or on the order of loading.

    An unreadable image raises InputError naming the file; with `skip_bad_images=True` it is
    reported once and replaced by the next readable image of the same class.
    """

    def __init__(self, images, labels, transform=None, skip_bad_images=False):
        if len(images) != len(labels):
            raise ValueError(f'{len(images)} images but {len(labels)} labels')
        self.images = list(images)
        self.labels = [int(label) for label in labels]
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.Index = defaultdict(list)
        for index, label in enumerate(self.labels):
            self.Index[label].append(index)
        self.Index = dict(self.Index)
        self._bad = set()

    @property
    def num_classes(self):
        return len(self.Index)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        label = self.labels[index]
        image = self._load(index)
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(seed))
                    image = self.transform(image)
        return image, label

    def _load(self, index):
        path = self.images[index]
        try:
            return read_image(path)
        except InputError:
            if not self.skip_bad_images:
                raise
        if path not in self._bad:
            self._bad.add(path)
            warnings.warn(f'skipping unreadable image {path} (--skip_bad_images)')
        same_class = self.Index[self.labels[index]]
        start = same_class.index(index)
        for other in same_class[start + 1:] + same_class[:start]:
            if self.images[other] not in self._bad:
                try:
                    return read_image(self.images[other])
                except InputError:
                    self._bad.add(self.images[other])
        raise InputError(f'no readable image left in class {self.labels[index]} '
                         f'(last tried: {path})')


def read_image(path):
    """Open an image file as RGB; any failure becomes one InputError naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert('RGB')
    except FileNotFoundError:
        raise InputError(f'image file not found: {path}') from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f'cannot decode image {path}: {err}') from None
