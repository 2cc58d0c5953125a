"""Semi-global dictionary against a plain per-class deque model of it."""
from collections import OrderedDict, deque

import pytest
import torch

from common.errors import InputError
from utils.semi_global import SemiGlobalDictionary

DIM = 3


class ReferenceDictionary:
    """Per class a deque of the newest d_size vectors; least recently pushed classes not in
    the incoming batch are dropped while the batch's new entries would not fit."""

    def __init__(self, d_size, capacity):
        self.d_size, self.capacity = d_size, capacity
        self.classes = OrderedDict()

    def push(self, emb, labels):
        labels = labels.tolist()
        needed = sum(min(labels.count(c), self.d_size - len(self.classes.get(c, ())))
                     for c in set(labels))
        for c in [c for c in self.classes if c not in labels]:
            if self.capacity - sum(map(len, self.classes.values())) >= needed:
                break
            del self.classes[c]
        for vector, label in zip(emb, labels):
            self.classes.setdefault(label, deque(maxlen=self.d_size)).append(vector.tolist())
            self.classes.move_to_end(label)


def batch(labels, start):
    """Embeddings numbered from `start` so every entry is recognisable."""
    values = torch.arange(start, start + len(labels), dtype=torch.float32)
    return values[:, None].repeat(1, DIM), torch.tensor(labels)


def assert_same(store, ref):
    emb, labels = store.tensors()
    assert len(store) == len(emb) == sum(map(len, ref.classes.values()))
    assert store.num_classes == len(ref.classes)
    for label, entries in ref.classes.items():
        assert store.class_entries(label).tolist() == list(entries)
        assert sorted(emb[labels == label].tolist()) == sorted(entries)


def test_fifo_order_and_d_size_cap():
    store, ref = SemiGlobalDictionary(d_size=3, dim=DIM), ReferenceDictionary(3, 10 ** 5)
    for step, labels in enumerate([[1, 1, 2], [1, 2, 2], [1, 1, 5], [2, 2, 2, 2]]):
        emb, lab = batch(labels, 100 * step)
        store.push(emb, lab), ref.push(emb, lab)
        assert_same(store, ref)
    assert store.class_entries(1).tolist() == [[100.0] * DIM, [200.0] * DIM, [201.0] * DIM]
    assert store.class_entries(2)[:, 0].tolist() == [301.0, 302.0, 303.0]  # 4 in one batch: newest 3


def test_tensors_are_views_of_the_preallocated_store():
    store = SemiGlobalDictionary(d_size=2, dim=DIM, capacity=50)
    store.push(*batch([4, 4, 9], 0))
    emb, labels = store.tensors()
    assert emb.data_ptr() == store.emb.data_ptr() and labels.data_ptr() == store.labels.data_ptr()
    assert store.emb.shape == (50, DIM)
    assert sorted(labels.tolist()) == [4, 4, 9]


def test_capacity_bound_evicts_least_recent_classes():
    store, ref = SemiGlobalDictionary(d_size=2, dim=DIM, capacity=6), ReferenceDictionary(2, 6)
    for step, labels in enumerate([[1, 1, 2, 2], [3, 3], [1], [4, 4, 5], [6, 6, 6]]):
        emb, lab = batch(labels, 10 * step)
        store.push(emb, lab), ref.push(emb, lab)
        assert len(store) <= 6
        assert_same(store, ref)
    assert list(ref.classes) == [4, 5, 6]  # 2 and 3, then 1 were evicted


@pytest.mark.parametrize('seed', range(5))
def test_random_pushes_match_reference(seed):
    g = torch.Generator().manual_seed(seed)
    capacity = [None, 40, 23][seed % 3]
    store = SemiGlobalDictionary(d_size=4, dim=DIM, capacity=capacity)
    ref = ReferenceDictionary(4, capacity or 10 ** 6)
    for step in range(60):
        labels = torch.randint(0, 15, (6,), generator=g).tolist()
        emb, lab = batch(labels, 10 * step)
        store.push(emb, lab), ref.push(emb, lab)
        assert_same(store, ref)


def test_full_store_whose_classes_are_all_in_the_batch_still_takes_a_new_class():
    # Nothing can be evicted: classes 0 and 1 may not grow into the row class 2 needs.
    store = SemiGlobalDictionary(d_size=5, dim=DIM, capacity=6)
    store.push(*batch([0, 1], 0))
    store.push(*batch([0, 0, 0, 0, 1, 1, 1, 1, 2], 10))
    assert len(store) == 6 and store.num_classes == 3
    assert store.class_entries(2)[:, 0].tolist() == [18.0]
    assert store.class_entries(0)[:, 0].tolist() == [10.0, 11.0, 12.0, 13.0]  # 3 rows free
    assert store.class_entries(1)[:, 0].tolist() == [17.0]  # no row left: only its newest
    _, labels = store.tensors()
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 2]


@pytest.mark.parametrize('seed', range(4))
def test_tight_capacity_keeps_each_class_newest_entries(seed):
    """Capacity barely above one batch's classes: no failure, the bound holds, every class of
    the batch is stored, and each class holds the newest entries of its own history."""
    g = torch.Generator().manual_seed(seed)
    store, history = SemiGlobalDictionary(d_size=4, dim=DIM, capacity=7), {}
    for step in range(80):
        labels = torch.randint(0, 9, (int(torch.randint(1, 9, (1,), generator=g)),),
                               generator=g)
        labels = labels[torch.isin(labels, labels.unique()[:6])].tolist()  # at most 6 classes
        emb, lab = batch(labels, 100 * step)
        store.push(emb, lab)
        for vector, label in zip(emb.tolist(), labels):
            history.setdefault(label, []).append(vector)
        stored, stored_labels = store.tensors()
        assert len(store) <= 7 and set(labels) <= set(stored_labels.tolist())
        for label in set(stored_labels.tolist()):
            entries = store.class_entries(label).tolist()
            assert 1 <= len(entries) <= 4 and entries == history[label][-len(entries):]
            assert (stored_labels == label).sum() == len(entries)


def test_state_round_trips_through_a_checkpoint_file(tmp_path):
    store = SemiGlobalDictionary(d_size=3, dim=DIM, capacity=12)
    for step in range(6):
        store.push(*batch([step % 5, step % 5, (step + 2) % 5, 7], 10 * step))
    torch.save({'dictionary': store.state_dict()}, tmp_path / 'ckp.pth.tar')
    restored = SemiGlobalDictionary(d_size=3, dim=DIM, capacity=12)
    restored.load_state_dict(torch.load(tmp_path / 'ckp.pth.tar')['dictionary'])
    for a, b in zip(store.tensors(), restored.tensors()):
        assert torch.equal(a, b)
    for step in range(6, 10):  # and both evolve identically afterwards
        emb, lab = batch([step % 6, 8, 8, 1], 10 * step)
        store.push(emb, lab), restored.push(emb, lab)
        for a, b in zip(store.tensors(), restored.tensors()):
            assert torch.equal(a, b)
        assert [store.class_entries(c).tolist() for c in range(9)] == \
               [restored.class_entries(c).tolist() for c in range(9)]


def test_loading_a_dictionary_of_other_shape_fails_clearly():
    state = SemiGlobalDictionary(d_size=3, dim=DIM).state_dict()
    with pytest.raises(InputError, match='--dim, --d_size'):
        SemiGlobalDictionary(d_size=5, dim=DIM).load_state_dict(state)


def test_capacity_too_small_for_one_batch():
    store = SemiGlobalDictionary(d_size=2, dim=DIM, capacity=3)
    with pytest.raises(InputError, match='--dict_capacity'):
        store.push(*batch([1, 2, 3, 4], 0))


def test_embeddings_are_stored_detached_in_float32():
    store = SemiGlobalDictionary(d_size=2, dim=DIM)
    emb = torch.ones(2, DIM, dtype=torch.float64, requires_grad=True)
    store.push(emb * 2, torch.tensor([1, 2]))
    stored, _ = store.tensors()
    assert stored.dtype == torch.float32 and not stored.requires_grad
