"""A labelled list of image files, the one Dataset class every data set uses; reading image
files (the header, or the whole image in RGB whatever its mode) within a pixel limit; checking
every listed image before a run (--check_images, --skip_bad_images); and how loader workers
treat signals."""
import os
import signal
import sys
import threading
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.errors import InputError

# --max_image_pixels' default: far above any photo of the data sets (CUB's largest is 0.25 Mpx),
# about 300 MB once decoded. PIL's own limit (89.5 Mpx, an error from 179 Mpx) is replaced by
# this one, which the message names with the flag that raises it.
MAX_IMAGE_PIXELS = 100_000_000

# PIL modes holding 16 bits per pixel: scaled to 8 bits by keeping the high byte (value >> 8),
# which is also what PIL does itself with 16-bit colour PNGs.
SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


class ImageList(Dataset):
    """Images from a list of paths with integer labels.

    Attributes relied on elsewhere: `images` (paths), `labels` (ints, as the annotation gives
    them) and `Index` (label -> list of indices), which the K-P samplers read.

    An item is addressed either by its index or by `(index, seed)`: with a seed the random
    transform draws from a generator seeded with it, so a sample's augmentation depends only on
    what the sampler asked for, not on the worker that loads it or on the order of loading.

    An image that cannot be read, or declares more than `max_pixels` pixels, raises InputError
    naming the file. (--skip_bad_images removes such images before a run starts, with `without`:
    nothing is replaced while it runs.)
    """

    def __init__(self, images, labels, transform=None, max_pixels=MAX_IMAGE_PIXELS):
        if len(images) != len(labels):
            raise ValueError(f'{len(images)} images but {len(labels)} labels')
        self.images = list(images)
        self.labels = [int(label) for label in labels]
        self.transform = transform
        self.max_pixels = max_pixels
        self.Index = defaultdict(list)
        for index, label in enumerate(self.labels):
            self.Index[label].append(index)
        self.Index = dict(self.Index)

    @property
    def num_classes(self):
        return len(self.Index)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        label = self.labels[index]
        image = read_image(self.images[index], max_pixels=self.max_pixels)
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(seed))
                    image = self.transform(image)
        return image, label

    def without(self, paths):
        """This list without the images in `paths`, each gone with its label; the others keep
        their order, transform and pixel limit."""
        kept = [index for index, path in enumerate(self.images) if path not in paths]
        return ImageList([self.images[i] for i in kept], [self.labels[i] for i in kept],
                         self.transform, self.max_pixels)


# ---- reading one image ------------------------------------------------------------------------

@contextmanager
def open_image(path, max_pixels=MAX_IMAGE_PIXELS):
    """The PIL image of `path` with its header read (its pixels are decoded when first used,
    inside the `with`). InputError naming the file when it is missing or not an image, or when
    its header declares more than `max_pixels` pixels."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # ours replaces PIL's, also while the pixels are decoded
    try:
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise InputError(f'image file not found: {path}') from None
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f'cannot decode image {path}: {err}') from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(f'image {path} declares {width} x {height} pixels, more than '
                                 f'the limit of {max_pixels:,} (--max_image_pixels)')
            yield image
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def read_image(path, header_only=False, max_pixels=MAX_IMAGE_PIXELS):
    """The image of `path` in RGB (`decode_rgb`); with `header_only`, read no further than the
    header (format and size) and return the size. Any failure is one InputError naming the
    file."""
    with open_image(path, max_pixels) as image:
        return image.size if header_only else decode_rgb(image, path)


def decode_rgb(image, path):
    """Decode an opened PIL image into an RGB one, whatever its mode: 16-bit grey is scaled to
    8 bits (value >> 8), alpha is dropped (as PIL's convert does), palette, CMYK and the other
    modes convert as PIL converts them. A file that fails to decode (cut short) is an InputError
    naming `path`."""
    try:
        if image.mode in SIXTEEN_BIT_MODES:
            high_bytes = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return Image.fromarray(high_bytes, 'L').convert('RGB')
        return image.convert('RGB')
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f'cannot decode image {path}: {err}') from None


# ---- checking the listed images ---------------------------------------------------------------

def unreadable_images(paths, workers=0, progress=False, decode=False,
                      max_pixels=MAX_IMAGE_PIXELS):
    """`(position, InputError message)` of each image among `paths` whose header cannot be read
    or declares more than `max_pixels` pixels, in list order; with `decode`, also of each image
    whose pixels do not decode (a file cut short after its header). `workers` loader processes
    read them; a progress bar goes to stderr. The global torch generator is left as it was (a
    DataLoader draws its base seed from it), so that a seeded run's initial weights do not
    depend on whether the images were checked."""
    loader = DataLoader(_Problems(paths, decode, max_pixels), batch_size=IMAGES_PER_TASK,
                        num_workers=workers, collate_fn=list,
                        worker_init_fn=leave_signals_to_main_process)
    problems = []
    with torch.random.fork_rng(devices=[]), tqdm(
            total=len(paths), desc='decode images' if decode else 'check images', unit='image',
            disable=not progress, file=sys.stderr) as bar:
        for task, messages in enumerate(loader):
            problems += [(task * IMAGES_PER_TASK + offset, message)
                         for offset, message in enumerate(messages) if message is not None]
            bar.update(len(messages))
    return problems


IMAGES_PER_TASK = 256


class _Problems(Dataset):
    """Item i: None when image i reads (its header, or with `decode` the whole image), else the
    error message."""

    def __init__(self, paths, decode, max_pixels):
        self.paths, self.decode, self.max_pixels = paths, decode, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            read_image(self.paths[index], header_only=not self.decode,
                       max_pixels=self.max_pixels)
        except InputError as err:
            return str(err)
        return None


def leave_signals_to_main_process(worker_id=None):
    """In a loader worker: SIGINT and SIGTERM are the main process's to handle (it stops at an
    iteration boundary), also when a batch system, `timeout` or Ctrl-C signals the whole process
    group. Only a SIGTERM from the worker's own parent, which is how multiprocessing and the
    DataLoader shut workers down, ends it. Where the sender cannot be told (no sigwaitinfo),
    SIGTERM keeps its default action."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, 'sigwaitinfo'):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True,
                         name='sigterm-from-parent').start()


def _exit_on_sigterm_from(parent):
    """Wait for SIGTERM (blocked in every other thread of the worker); exit when `parent`
    sent it."""
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)
