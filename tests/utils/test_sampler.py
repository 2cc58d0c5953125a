"""K-P samplers: class coverage, K per class, batch composition, replacement, seeds."""
from collections import Counter
from types import SimpleNamespace

import pytest

from common.errors import InputError
from utils.sampler import EndlessKPBatchSampler, FastRandomIdentitySampler, KPBatchSampler

K = 5


def source(sizes):
    """A data source with classes labelled 10, 20, ... holding `sizes[i]` consecutive indices."""
    index, start = {}, 0
    for i, size in enumerate(sizes):
        index[10 * (i + 1)] = list(range(start, start + size))
        start += size
    labels = {i: label for label, members in index.items() for i in members}
    return SimpleNamespace(Index=index, label_of=labels)


def test_every_class_once_per_epoch_with_k_consecutive_indices():
    data = source([7, 5, 9, 6, 8, 5])
    sampler = FastRandomIdentitySampler(data, K, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 6 * K
    blocks = [indices[i:i + K] for i in range(0, len(indices), K)]
    block_classes = [{data.label_of[i] for i in block} for block in blocks]
    assert all(len(c) == 1 for c in block_classes)
    assert sorted(c.pop() for c in block_classes) == sorted(data.Index)


def test_replacement_only_when_class_is_short():
    data = source([3, 5, 12])
    for seed in range(20):
        indices = list(FastRandomIdentitySampler(data, K, seed=seed))
        for label, members in data.Index.items():
            drawn = [i for i in indices if i in members]
            assert len(drawn) == K
            if len(members) >= K:
                assert len(set(drawn)) == K  # without replacement
            else:
                assert len(set(drawn)) < K  # 3 images must repeat to fill 5 slots


def test_batches_are_p_classes_of_k():
    data = source([6] * 10)
    batches = list(KPBatchSampler(FastRandomIdentitySampler(data, K, seed=1), batch_size=20))
    assert len(batches) == 10 * K // 20 == 2
    for batch in batches:
        labels = Counter(data.label_of[i] for i, _ in batch)
        assert len(labels) == 4 and set(labels.values()) == {K}


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    data = source([8] * 12)
    a = KPBatchSampler(FastRandomIdentitySampler(data, K, seed=7), 20)
    b = KPBatchSampler(FastRandomIdentitySampler(data, K, seed=7), 20)
    c = KPBatchSampler(FastRandomIdentitySampler(data, K, seed=8), 20)
    assert list(a) == list(b)
    assert list(a) != list(c)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    seeds = [seed for batch in a for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


def test_unseeded_sampler_draws_a_seed_and_keeps_it():
    sampler = FastRandomIdentitySampler(source([6] * 4), K)
    assert list(sampler) == list(sampler)


def test_start_batch_resumes_mid_epoch():
    batches = KPBatchSampler(FastRandomIdentitySampler(source([6] * 12), K, seed=1), 20)
    batches.set_epoch(4)
    full = list(batches)
    batches.set_epoch(4, start_batch=1)
    assert list(batches) == full[1:] and len(batches) == len(full) - 1


def test_ranks_get_disjoint_equal_shares():
    data = source([6] * 13)
    sampler = FastRandomIdentitySampler(data, K, seed=5)
    shares = [KPBatchSampler(sampler, 10, rank=r, world_size=2).epoch_batches(0)
              for r in range(2)]
    single = KPBatchSampler(sampler, 10).epoch_batches(0)
    assert len(shares[0]) == len(shares[1]) == 3  # 6 global batches of 2 classes; 13th dropped
    assert shares[0] == single[0:6:2] and shares[1] == single[1:6:2]


def test_batch_size_must_be_multiple_of_k():
    with pytest.raises(InputError, match='--batch_size 42 must be a multiple .* \\(5\\)'):
        FastRandomIdentitySampler(source([6] * 10), K, batch_size=42)


def test_batch_size_asking_for_too_many_classes():
    with pytest.raises(InputError, match='asks for 12 classes .* only 10 classes'):
        FastRandomIdentitySampler(source([6] * 10), K, batch_size=60)


def test_endless_stream_crosses_epochs_and_resumes():
    sampler = FastRandomIdentitySampler(source([4] * 7), 1, seed=2)
    stream = iter(EndlessKPBatchSampler(sampler, 3))
    first = [next(stream) for _ in range(10)]
    per_epoch = KPBatchSampler(sampler, 3)
    assert first[:2] == per_epoch.epoch_batches(0) and first[2:4] == per_epoch.epoch_batches(1)
    resumed = iter(EndlessKPBatchSampler(sampler, 3, start=5))
    assert [next(resumed) for _ in range(5)] == first[5:]


def test_class_order_and_augmentation_seeds_change_between_epochs():
    data = source([8] * 12)
    batches = KPBatchSampler(FastRandomIdentitySampler(data, K, seed=7), 20)
    epochs = range(1, 6)
    orders = [[data.label_of[i] for i, _ in sum(batches.epoch_batches(e), [])][::K]
              for e in epochs]
    assert all(sorted(order) == sorted(data.Index) for order in orders)
    assert len({tuple(order) for order in orders}) == len(epochs)
    seeds = [{seed for batch in batches.epoch_batches(e) for _, seed in batch} for e in epochs]
    assert all(len(s) == 12 * K for s in seeds)
    assert len(set.union(*seeds)) == len(epochs) * 12 * K  # no seed comes back
    assert batches.epoch_batches(3) == batches.epoch_batches(3)
