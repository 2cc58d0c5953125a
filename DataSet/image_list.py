"""A labelled list of image files, the one Dataset class every data set uses; reading image
files (whole, or the header only for --check_images); and how loader workers treat signals."""
import os
import signal
import sys
import threading
import time
import warnings
from collections import defaultdict

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.errors import InputError


class ImageList(Dataset):
    """Images from a list of paths with integer labels.

    Attributes relied on elsewhere: `images` (paths), `labels` (ints, as the annotation gives
    them) and `Index` (label -> list of indices), which the K-P samplers read.

    An item is addressed either by its index or by `(index, seed)`: with a seed the random
    transform draws from a generator seeded with it, so a sample's augmentation depends only on
    what the sampler asked for, not on the worker that loads it or on the order of loading.

    An unreadable image raises InputError naming the file; with `skip_bad_images=True` it is
    reported once and replaced by the next readable image of the same class
    (`read_substituting_bad`).
    """

    def __init__(self, images, labels, transform=None, skip_bad_images=False,
                 bad_image_log=None):
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
        self.bad_images = set()  # per process: each loader worker keeps its own
        self.bad_image_log = bad_image_log  # the run's log.txt: skipped images are named there

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
        return read_substituting_bad(self, index, read_image)


def read_substituting_bad(dataset, index, read):
    """`read(path)` of image `index`. An unreadable image raises InputError naming it, unless
    `dataset.skip_bad_images`: then it is reported once (a warning on stderr and a line in
    `dataset.bad_image_log`, the run's log.txt, when set) and the next readable image of the same
    class is read in its place."""
    path = dataset.images[index]
    if not (dataset.skip_bad_images and path in dataset.bad_images):
        try:
            return read(path)
        except InputError as err:
            if not dataset.skip_bad_images:
                raise
            report_bad_image(dataset, path, err)
    same_class = dataset.Index[dataset.labels[index]]
    start = same_class.index(index)
    for other in same_class[start + 1:] + same_class[:start]:
        if dataset.images[other] not in dataset.bad_images:
            try:
                return read(dataset.images[other])
            except InputError as err:
                report_bad_image(dataset, dataset.images[other], err)
    raise InputError(f'no readable image left in class {dataset.labels[index]}: all '
                     f'{len(same_class)} of its images failed (the first: {path})')


def report_bad_image(dataset, path, err):
    if path in dataset.bad_images:
        return
    dataset.bad_images.add(path)
    message = f'skipping unreadable image (--skip_bad_images): {err}'
    warnings.warn(message)
    if dataset.bad_image_log:
        # Loader workers are separate processes: they append whole lines to the run's log
        # (opened in append mode by every writer, so lines interleave but never overwrite).
        try:
            with open(dataset.bad_image_log, 'a', encoding='utf-8') as log:
                log.write(f'[{time.strftime("%Y-%m-%d %H:%M:%S")}] {message}\n')
        except OSError:
            pass  # a rank whose machine does not hold the log: the warning remains


def read_image(path, header_only=False):
    """Open an image file as RGB; any failure becomes one InputError naming the file. With
    `header_only`, read no further than the header (format and size) and return the size."""
    try:
        with Image.open(path) as image:
            return image.size if header_only else image.convert('RGB')
    except FileNotFoundError:
        raise InputError(f'image file not found: {path}') from None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f'cannot decode image {path}: {err}') from None


def unreadable_images(paths, workers=0, progress=False):
    """The InputError messages of the image files among `paths` whose header cannot be read,
    in list order. `workers` loader processes read them; a progress bar goes to stderr. The
    global torch generator is left as it was (a DataLoader draws its base seed from it), so that
    a seeded run's initial weights do not depend on whether the images were checked."""
    loader = DataLoader(_Headers(paths), batch_size=HEADERS_PER_TASK, num_workers=workers,
                        collate_fn=list, worker_init_fn=leave_signals_to_main_process)
    errors = []
    with torch.random.fork_rng(devices=[]), tqdm(
            total=len(paths), desc='check images', unit='image', disable=not progress,
            file=sys.stderr) as bar:
        for messages in loader:
            errors += [message for message in messages if message is not None]
            bar.update(len(messages))
    return errors


HEADERS_PER_TASK = 256


class _Headers(Dataset):
    """Item i: None when image i's header reads, else the error message."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            read_image(self.paths[index], header_only=True)
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
