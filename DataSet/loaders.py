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
    query: Optional[DataLoader] = None  # this process's shard of the query set (In-Shop), in order
    holdout: Optional[DataLoader] = None  # this process's shard of the holdout classes, in order


def make_loaders(dataset, *, input_pipeline, width, origin_width, ratio, workers, cuda,
                 train_batches, eval_batch_size, rank=0, world_size=1, val_batches=None):
    """Loaders over `dataset` (a DataSet.Dataset): `train_batches` and `val_batches` are batch
    samplers of the training set (the second one endless, or None); the test set is split
    between `world_size` processes by index, and so are the query set and the holdout classes
    (`dataset.query` / `dataset.holdout`, where not None)."""
    options = dict(num_workers=workers, pin_memory=cuda,
                   worker_init_fn=leave_signals_to_main_process)
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4)
    train_set = dataset.train
    if input_pipeline != 'pil':
        train_set = EncodedImageList(dataset.train, width, origin_width, ratio, train=True,
                                     mode=input_pipeline)
        options['collate_fn'] = tensor_collate

    def evaluation_shard(images):
        """This process's share of a test set, in order."""
        if images is None:
            return None
        if input_pipeline != 'pil':
            images = EncodedImageList(images, width, origin_width, ratio, train=False,
                                      mode=input_pipeline)
        return DataLoader(Subset(images, range(rank, len(images), world_size)),
                          batch_size=eval_batch_size, shuffle=False, **options)

    train = DataLoader(train_set, batch_sampler=train_batches, **options)
    gallery = evaluation_shard(dataset.gallery)
    validation = None
    if val_batches is not None:
        val_options = dict(options, num_workers=min(workers, VALIDATION_WORKERS))
        if not val_options['num_workers']:
            val_options.pop('persistent_workers', None), val_options.pop('prefetch_factor', None)
        validation = iter(DataLoader(train_set, batch_sampler=val_batches, **val_options))
    return Loaders(train, gallery, validation, evaluation_shard(dataset.query),
                   evaluation_shard(dataset.holdout))
