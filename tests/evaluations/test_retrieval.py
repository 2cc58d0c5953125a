"""Recall@K, MAP@R and R-Precision against a plain per-query loop that sorts the whole
gallery."""
import pytest
import torch

from evaluations import (RECALL_KS, map_at_r, r_precision, recall_at_ks, recall_ks_for,
                         retrieval_metrics)

KS = (1, 2, 3, 4, 8, 16, 100)
# Labels far from 0..C-1: negative, large and gappy.
LABEL_VALUES = torch.tensor([-7, 0, 3, 42, 10 ** 12, -(10 ** 9), 5, 6, 1000, 17])


# ---------------------------------------------------------------------------------------------
# Reference: one query at a time, the gallery sorted with Python's sorted().

def ranked_gallery(query_row, query_label, gallery, gallery_labels, skip_index):
    """Gallery items of one query as (sim, index, is_positive), best first; among equal
    similarities negatives come before positives (the pessimistic tie rule)."""
    items = []
    for index in range(len(gallery)):
        if index == skip_index:
            continue
        sim = sum(float(a) * float(b) for a, b in zip(query_row, gallery[index]))
        items.append((sim, index, int(gallery_labels[index]) == int(query_label)))
    return sorted(items, key=lambda item: (-item[0], item[2]))


def reference_metrics(query, query_labels, gallery, gallery_labels, ks):
    self_excluded = gallery is None
    if self_excluded:
        gallery, gallery_labels = query, query_labels
    hits = [0] * len(ks)
    ap_values, r_precision_values = [], []
    for q in range(len(query)):
        ranked = ranked_gallery(query[q], query_labels[q], gallery, gallery_labels,
                                skip_index=q if self_excluded else None)
        positive_flags = [is_pos for _, _, is_pos in ranked]
        if True in positive_flags:
            first_positive_rank = positive_flags.index(True) + 1
            for i, k in enumerate(ks):
                hits[i] += first_positive_rank <= k
        num_pos = sum(positive_flags)
        if num_pos:
            found, precision_sum = 0, 0.0
            for rank, is_pos in enumerate(positive_flags[:num_pos], start=1):
                if is_pos:
                    found += 1
                    precision_sum += found / rank
            ap_values.append(precision_sum / num_pos)
            r_precision_values.append(sum(positive_flags[:num_pos]) / num_pos)
    metrics = {f'R@{k}': hits[i] / len(query) for i, k in enumerate(ks)}
    metrics['MAP@R'] = sum(ap_values) / len(ap_values) if ap_values else 0.0
    metrics['R-Precision'] = (sum(r_precision_values) / len(r_precision_values)
                              if r_precision_values else 0.0)
    return metrics


# ---------------------------------------------------------------------------------------------
# Data

def random_labels(generator, size):
    num_classes = int(torch.randint(1, size + 1, (1,), generator=generator))
    values = LABEL_VALUES[torch.randperm(len(LABEL_VALUES), generator=generator)]
    if num_classes > len(values):
        values = torch.cat([values, torch.arange(100, 100 + num_classes)])
    return values[torch.randint(0, num_classes, (size,), generator=generator)]


def random_set(seed, quantised, max_size=60):
    """Embeddings [N, D] and labels [N]. Quantised embeddings hold multiples of 1/2 in [-1, 1]
    (every dot product is exact in float32, and many tie); some rows are duplicated."""
    generator = torch.Generator().manual_seed(seed)
    size = int(torch.randint(1, max_size + 1, (1,), generator=generator))
    dim = int(torch.randint(2, 17, (1,), generator=generator))
    if quantised:
        emb = torch.randint(-2, 3, (size, dim), generator=generator).float() / 2
        copies = torch.randint(0, size, (size // 3,), generator=generator)
        targets = torch.randint(0, size, (size // 3,), generator=generator)
        emb[targets] = emb[copies]  # duplicates, with the same or another label
    else:
        emb = torch.nn.functional.normalize(torch.randn(size, dim, generator=generator), dim=1)
    return emb, random_labels(generator, size)


def assert_matches_reference(query, query_labels, gallery, gallery_labels, **chunking):
    expected = reference_metrics(query, query_labels, gallery, gallery_labels, KS)
    got = retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=KS, **chunking)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


# ---------------------------------------------------------------------------------------------
# Against the reference

@pytest.mark.parametrize('quantised', [False, True])
@pytest.mark.parametrize('seed', range(12))
def test_query_is_gallery_matches_reference(seed, quantised):
    emb, labels = random_set(seed, quantised)
    assert_matches_reference(emb, labels, None, None)


@pytest.mark.parametrize('quantised', [False, True])
@pytest.mark.parametrize('seed', range(12))
def test_separate_gallery_matches_reference(seed, quantised):
    query, query_labels = random_set(seed, quantised)
    gallery, gallery_labels = random_set(1000 + seed, quantised)
    dim = min(query.shape[1], gallery.shape[1])
    query, gallery = query[:, :dim], gallery[:, :dim]
    assert_matches_reference(query, query_labels, gallery, gallery_labels)


@pytest.mark.parametrize('seed', range(6))
def test_tiny_sets_with_heavy_ties_match_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    size = 1 + seed
    emb = torch.randint(-1, 2, (size, 2), generator=generator).float()
    labels = torch.randint(0, 2, (size,), generator=generator)
    assert_matches_reference(emb, labels, None, None)


@pytest.mark.parametrize('chunk_size', [1, 3, 7])
@pytest.mark.parametrize('seed', range(6))
def test_small_chunks_give_the_same_result_as_one_chunk(seed, chunk_size):
    emb, labels = random_set(seed, quantised=seed % 2 == 0)
    one_chunk = retrieval_metrics(emb, labels, ks=KS, chunk_size=len(emb))
    assert retrieval_metrics(emb, labels, ks=KS, chunk_size=chunk_size) == one_chunk
    gallery, gallery_labels = emb[: len(emb) // 2 + 1], labels[: len(emb) // 2 + 1]
    assert (retrieval_metrics(emb, labels, gallery, gallery_labels, ks=KS, chunk_size=chunk_size)
            == retrieval_metrics(emb, labels, gallery, gallery_labels, ks=KS,
                                 chunk_size=len(emb)))


def test_tiny_memory_budget_gives_the_same_result():
    emb, labels = random_set(3, quantised=True)
    assert (retrieval_metrics(emb, labels, ks=KS, max_chunk_bytes=1)
            == retrieval_metrics(emb, labels, ks=KS))


# ---------------------------------------------------------------------------------------------
# Hand-made cases

def test_duplicate_of_the_query_at_another_index_still_counts():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([5, 5, 9])
    assert recall_at_ks(emb, labels, ks=(1,)) == [2 / 3]  # the third row has no positive
    assert map_at_r(emb, labels) == 1.0


def test_negative_tied_with_the_best_positive_ranks_above_it():
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    gallery_labels = torch.tensor([1, 2, 1])  # positive and negative with the same embedding
    assert recall_at_ks(query, torch.tensor([1]), gallery, gallery_labels, ks=(1, 2)) == [0.0, 1.0]
    # R = 2: ranking is negative, positive, positive -> AP@2 = (0 + 1/2) / 2.
    assert map_at_r(query, torch.tensor([1]), gallery, gallery_labels) == 0.25


def test_duplicate_with_another_label_does_not_inflate_recall():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.6]])
    labels = torch.tensor([0, 1, 0])
    # Query 0: the duplicate (label 1) ties at 1.0 and ranks first; its positive comes second.
    assert recall_at_ks(emb, labels, ks=(1, 2)) == [0.0, 2 / 3]


def test_all_similarities_negative_self_is_excluded_by_index():
    # Unit vectors at 0, 100 and 220 degrees: every pair has a negative similarity, so the
    # official trick (subtract 1 from the diagonal, self similarity becomes 0) would rank each
    # query first and report R@1 = 2/3 here.
    angles = torch.deg2rad(torch.tensor([0.0, 100.0, 220.0]))
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 1, 0])
    assert recall_at_ks(emb, labels, ks=(1, 2)) == [0.0, 2 / 3]
    assert map_at_r(emb, labels) == 0.0


def test_single_query_as_its_own_gallery_is_a_miss():
    emb, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([3])
    assert recall_at_ks(emb, labels, ks=(1, 1000)) == [0.0, 0.0]
    assert map_at_r(emb, labels) == 0.0


def test_only_singleton_classes_give_zero():
    emb = torch.nn.functional.normalize(torch.randn(10, 4))
    labels = torch.arange(10) * 3 - 20
    assert recall_at_ks(emb, labels, ks=(1, 5, 50)) == [0.0, 0.0, 0.0]
    assert map_at_r(emb, labels) == 0.0


def test_k_larger_than_the_gallery_counts_every_query_with_a_positive():
    emb, labels = random_set(5, quantised=True, max_size=20)
    has_positive = [(labels == label).sum() > 1 for label in labels]
    assert recall_at_ks(emb, labels, ks=(1000,)) == [sum(has_positive) / len(labels)]


def test_wrappers_agree_with_the_single_pass():
    emb, labels = random_set(7, quantised=False)
    metrics = retrieval_metrics(emb, labels, ks=(1, 2, 4))
    assert recall_at_ks(emb, labels, ks=(1, 2, 4)) == [metrics['R@1'], metrics['R@2'],
                                                       metrics['R@4']]
    assert map_at_r(emb, labels) == metrics['MAP@R']
    assert r_precision(emb, labels) == metrics['R-Precision']
    assert all(isinstance(value, float) for value in metrics.values())


def test_r_precision_by_hand_with_a_tie_and_duplicates():
    """Query (1, 0) against items 0.9 (positive), 0.5 (positive) and 0.5 (negative): the
    negative tied with a positive ranks first, so 1 of the first R = 2 is a positive."""
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.9, 0.1], [0.5, 0.8], [0.5, -0.8], [1.0, 0.0]])
    assert r_precision(query, torch.tensor([1]), gallery[:3], torch.tensor([1, 1, 2])) == 0.5
    # a duplicate of the query with its label: R = 3, ranked dup, 0.9, then the tie: 2 of 3
    assert r_precision(query, torch.tensor([1]), gallery,
                       torch.tensor([1, 1, 2, 1])) == pytest.approx(2 / 3, abs=1e-12)
    # a duplicate with another label ranks first: 1 of the first 2
    assert r_precision(query, torch.tensor([1]), gallery, torch.tensor([1, 1, 2, 2])) == 0.5
    # the query set as its own gallery, self excluded by index: queries 0, 1, 2 score 1/2,
    # 1 and 1; query 3 has no positive and is left out
    both = torch.cat([query, gallery[:3]])
    assert r_precision(both, torch.tensor([1, 1, 1, 2])) == pytest.approx(2.5 / 3, abs=1e-12)


def test_float64_input_and_int32_labels_are_accepted():
    emb, labels = random_set(8, quantised=True)
    assert (retrieval_metrics(emb.double(), labels.int(), ks=KS)
            == retrieval_metrics(emb, labels, ks=KS))


def test_recall_ks_per_dataset():
    assert recall_ks_for('product') == (1, 10, 100, 1000)
    assert recall_ks_for('cub') == RECALL_KS['car'] == (1, 2, 4, 8, 16, 32)
    with pytest.raises(ValueError, match='imagenet'):
        recall_ks_for('imagenet')


# ---------------------------------------------------------------------------------------------
# Errors

EMB = torch.eye(3)
LABELS = torch.tensor([0, 0, 1])


@pytest.mark.parametrize('call, message', [
    (lambda: recall_at_ks(EMB, LABELS[:2]), '3 embeddings but 2 labels'),
    (lambda: recall_at_ks(EMB, LABELS, EMB), 'without gallery_labels'),
    (lambda: recall_at_ks(EMB, LABELS, None, LABELS), 'without gallery'),
    (lambda: recall_at_ks(EMB, LABELS, torch.eye(4)[:, :3], LABELS), '4 embeddings but 3'),
    (lambda: recall_at_ks(EMB, LABELS, torch.ones(3, 2), LABELS), 'dimension'),
    (lambda: recall_at_ks(torch.ones(0, 3), torch.ones(0, dtype=torch.long)), 'empty'),
    (lambda: recall_at_ks(EMB, LABELS, torch.ones(0, 3), LABELS[:0]), 'empty'),
    (lambda: recall_at_ks(torch.ones(3), LABELS), r'\[N, D\]'),
    (lambda: recall_at_ks(EMB, LABELS[:, None]), '1-D'),
    (lambda: recall_at_ks(EMB, LABELS.float()), 'integers'),
    (lambda: recall_at_ks(EMB, LABELS, ks=(1, 0)), 'positive integer'),
    (lambda: map_at_r(EMB * float('nan'), LABELS), 'NaN'),
    (lambda: retrieval_metrics(EMB, LABELS, chunk_size=0), 'chunk_size'),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
