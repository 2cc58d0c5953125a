"""K-P sampling: batches of P classes with K (`num_instances`) images each.

Everything here is a pure function of (seed, epoch): nothing is kept between epochs, so a
resumed run or another rank draws exactly the same batches without saving sampler state.
"""
import numpy as np
from torch.utils.data import Sampler

from common.errors import InputError


def _rng(seed, *stream):
    return np.random.default_rng([seed, *stream])


class FastRandomIdentitySampler(Sampler):
    """Per epoch: every class of `data_source.Index` once, in random order, with
    `num_instances` consecutive indices per class, drawn without replacement when the class has
    enough images and with replacement otherwise. `len` = classes x num_instances.

    `batch_size` (optional) is checked to be a whole number of classes (P = batch_size / K)
    that the data set can fill.
    """

    def __init__(self, data_source, num_instances, seed=None, batch_size=None):
        if num_instances < 1:
            raise InputError(f'--num_instances must be at least 1, got {num_instances}')
        self.index = {label: list(indices) for label, indices in data_source.Index.items()}
        self.classes = sorted(self.index)
        self.num_instances = num_instances
        self.seed = int(np.random.SeedSequence().entropy % 2 ** 63) if seed is None else seed
        self.epoch = 0
        if batch_size is not None:
            check_batch_size(batch_size, num_instances, len(self.classes))

    def set_epoch(self, epoch):
        self.epoch = epoch

    def epoch_indices(self, epoch):
        rng = _rng(self.seed, epoch, 0)
        order = rng.permutation(len(self.classes))
        indices = []
        for class_position in order:
            members = self.index[self.classes[class_position]]
            short = len(members) < self.num_instances
            indices.extend(rng.choice(members, self.num_instances, replace=short).tolist())
        return indices

    def __iter__(self):
        return iter(self.epoch_indices(self.epoch))

    def __len__(self):
        return len(self.classes) * self.num_instances


def check_batch_size(batch_size, num_instances, num_classes, flag='--batch_size'):
    if batch_size % num_instances != 0:
        raise InputError(f'{flag} {batch_size} must be a multiple of the number of instances '
                         f'per class ({num_instances})')
    classes_per_batch = batch_size // num_instances
    if classes_per_batch > num_classes:
        raise InputError(f'{flag} {batch_size} asks for {classes_per_batch} classes of '
                         f'{num_instances} images but the training set has only {num_classes}'
                         f' classes')


class KPBatchSampler:
    """Batches of `(index, augmentation seed)` pairs from a FastRandomIdentitySampler.

    The last incomplete batch is dropped. With `world_size` > 1, rank r takes batches
    r, r + world_size, ... and every rank gets the same number of batches, so all ranks run the
    same number of iterations (a few leftover classes per epoch are then dropped).
    `start_batch` skips the first batches of the current epoch (resuming mid-epoch).
    """

    def __init__(self, sampler, batch_size, rank=0, world_size=1):
        self.sampler = sampler
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def epoch_batches(self, epoch):
        indices = self.sampler.epoch_indices(epoch)
        seeds = _rng(self.sampler.seed, epoch, 1).integers(0, 2 ** 62, len(indices)).tolist()
        num_global = len(indices) // self.batch_size
        per_rank = num_global // self.world_size
        batches = []
        for position in range(self.rank, per_rank * self.world_size, self.world_size):
            start = position * self.batch_size
            batches.append(list(zip(indices[start:start + self.batch_size],
                                    seeds[start:start + self.batch_size])))
        return batches

    def __iter__(self):
        return iter(self.epoch_batches(self.sampler.epoch)[self.start_batch:])

    def __len__(self):
        global_batches = len(self.sampler) // self.batch_size
        return global_batches // self.world_size - self.start_batch


class EndlessKPBatchSampler:
    """An endless stream of K-P batches over epochs (the MMSI validation batches).

    Batch number n of the stream is a pure function of (seed, n); `start` resumes the stream
    after the first `start` batches.
    """

    def __init__(self, sampler, batch_size, rank=0, world_size=1, start=0):
        self.batches = KPBatchSampler(sampler, batch_size, rank, world_size)
        self.per_epoch = len(self.batches)
        if self.per_epoch == 0:
            raise InputError(f'validation batch of {batch_size} does not fit the data set')
        self.start = start

    def __iter__(self):
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_epoch)
            for batch in self.batches.epoch_batches(epoch)[offset:]:
                yield batch
            position = (epoch + 1) * self.per_epoch
