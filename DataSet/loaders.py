"""The DataLoaders of a run: training batches, this process's share of the test set, and MMSI's
endless validation stream.

The batch samplers (which images form a batch: utils/sampler.py) are made by the caller and
passed in; this module decides how the images are read (--input_pipeline) and by how many
workers.
"""
from typing import Iterator, NamedTuple, Optional

from torch.utils.data import DataLoader, Subset

from DataSet.image_list import leave_signals_to_main_process
from DataSet.tensor_pipeline import EncodedImageList, collate as tensor_collate

# The validation stream draws a small batch per iteration: two workers keep up with it.
VALIDATION_WORKERS = 2


class Loaders(NamedTuple):
    train: DataLoader
    gallery: DataLoader            # this process's shard of the test set, in order
    validation: Optional[Iterator]  # MMSI's validation batches (None without MMSI)


def make_loaders(dataset, *, input_pipeline, width, origin_width, ratio, workers, cuda,
                 train_batches, eval_batch_size, rank=0, world_size=1, val_batches=None):
    """Loaders over `dataset` (DataSet.create): `train_batches` and `val_batches` are batch
    samplers of the training set (the second one endless, or None); the test set is split
    between `world_size` processes by index."""
    options = dict(num_workers=workers, pin_memory=cuda,
                   worker_init_fn=leave_signals_to_main_process)
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4)
    train_set, gallery_set = dataset.train, dataset.gallery
    if input_pipeline != 'pil':
        size = (width, origin_width, ratio)
        train_set = EncodedImageList(dataset.train, *size, train=True, mode=input_pipeline)
        gallery_set = EncodedImageList(dataset.gallery, *size, train=False, mode=input_pipeline)
        options['collate_fn'] = tensor_collate
    train = DataLoader(train_set, batch_sampler=train_batches, **options)
    gallery = DataLoader(Subset(gallery_set, range(rank, len(gallery_set), world_size)),
                         batch_size=eval_batch_size, shuffle=False, **options)
    validation = None
    if val_batches is not None:
        val_options = dict(options, num_workers=min(workers, VALIDATION_WORKERS))
        if not val_options['num_workers']:
            val_options.pop('persistent_workers', None), val_options.pop('prefetch_factor', None)
        validation = iter(DataLoader(train_set, batch_sampler=val_batches, **val_options))
    return Loaders(train, gallery, validation)
