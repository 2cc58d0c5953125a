"""Every loss form against the per-anchor loop references of loss_reference.py."""
import pytest
import torch

import losses
from loss_reference import (contrastive_selection, contrastive_value, global_selection,
                            make_batch, masks_to_selection, ms_selection, ms_value, unit_rows)

TOL = dict(rtol=1e-10, atol=1e-10)
RULES = {
    'Con': (contrastive_selection, contrastive_value),
    'MS': (ms_selection, ms_value),
}
CASES = [('Con', 0.5), ('Con', 0.8), ('Con', 0.1), ('MS', 0.1), ('MS', 0.05), ('MS', 0.5)]


def test_batch_covers_anchors_that_mine_nothing():
    for rule, margin in CASES:
        select, _ = RULES[rule]
        empty = set(range(13))
        for seed in range(4):
            emb, labels = make_batch(seed)
            empty &= set(range(13)) - {i for i, _, _ in select(emb, labels, margin)}
        if rule == 'MS' or margin == 0.8:
            assert empty, (rule, margin)  # some anchor contributes 0 in every seed


@pytest.mark.parametrize('rule,margin', CASES)
@pytest.mark.parametrize('seed', range(4))
def test_select_form_gives_the_reference_pairs(rule, margin, seed):
    emb, labels = make_batch(seed)
    pos_mask, neg_mask = losses.create('S' + rule, margin=margin)(emb, labels)
    assert pos_mask.dtype == neg_mask.dtype == torch.bool
    assert masks_to_selection(pos_mask, neg_mask) == RULES[rule][0](emb, labels, margin)


@pytest.mark.parametrize('rule,margin', CASES)
@pytest.mark.parametrize('seed', range(4))
def test_plain_value_and_gradient(rule, margin, seed):
    select, value = RULES[rule]
    emb, labels = make_batch(seed)
    emb_ref = emb.clone().requires_grad_()
    ref = value(emb_ref, emb_ref, select(emb, labels, margin))
    ref.backward()
    emb.requires_grad_()
    loss = losses.create(rule, margin=margin)(emb, labels)
    loss.backward()
    assert loss.dim() == 0
    torch.testing.assert_close(loss, ref, **TOL)
    torch.testing.assert_close(emb.grad, emb_ref.grad, **TOL)


@pytest.mark.parametrize('rule,margin', CASES)
def test_weighted_form_with_random_weights(rule, margin):
    select, value = RULES[rule]
    emb, labels = make_batch(0)
    pos_mask, neg_mask = losses.create('S' + rule, margin=margin)(emb, labels)
    weights = torch.rand(13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights.requires_grad_()
    emb_ref = emb.clone().requires_grad_()
    ref = value(emb_ref, emb_ref, select(emb, labels, margin), weights)
    ref_grads = torch.autograd.grad(ref, (emb_ref, weights))
    emb.requires_grad_()
    loss = losses.create('W' + rule, margin=margin)(emb, labels, weights, pos_mask, neg_mask)
    grads = torch.autograd.grad(loss, (emb, weights))
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize('rule,margin', CASES)
def test_weighted_with_unit_weights_equals_plain(rule, margin):
    emb, labels = make_batch(2)
    masks = losses.create('S' + rule, margin=margin)(emb, labels)
    ones = torch.ones(13, 13, dtype=torch.float64)
    weighted = losses.create('W' + rule, margin=margin)(emb, labels, ones, *masks)
    torch.testing.assert_close(weighted, losses.create(rule, margin=margin)(emb, labels), **TOL)


@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_weighted_has_zero_embedding_gradient_at_zero_weights(rule):
    """The MMSI fast path relies on it: the virtual step is then theta' = theta."""
    emb, labels = make_batch(3)
    masks = losses.create('S' + rule, margin=0.1)(emb, labels)
    emb.requires_grad_()
    zeros = torch.zeros(13, 13, dtype=torch.float64, requires_grad=True)
    loss = losses.create('W' + rule, margin=0.1)(emb, labels, zeros, *masks)
    grad_emb, grad_w = torch.autograd.grad(loss, (emb, zeros))
    assert torch.count_nonzero(grad_emb) == 0
    assert torch.count_nonzero(grad_w) > 0


@pytest.mark.parametrize('rule,margin', CASES)
@pytest.mark.parametrize('seed', range(3))
def test_global_form_against_dictionary(rule, margin, seed):
    _, value = RULES[rule]
    query = unit_rows(6, 6, seed + 10)
    query_labels = torch.tensor([7, 7, 42, 3, 3, 99])  # 99 is absent from the dictionary
    memory = unit_rows(15, 6, seed + 20)
    memory[14] = query[0]  # a stored copy of a query
    memory_labels = torch.tensor([7, 7, 7, 42, 3, 3, 3, 8, 8, 8, 15, 15, 61, 61, 7])  # 8, 15, 61: not queried
    chosen = global_selection(query, query_labels, memory, memory_labels, rule, margin)
    query_ref, memory_ref = query.clone().requires_grad_(), memory.clone().requires_grad_()
    ref = value(query_ref, memory_ref, chosen)
    ref_grads = torch.autograd.grad(ref, (query_ref, memory_ref))
    query.requires_grad_(), memory.requires_grad_()
    loss = losses.create('G' + rule, margin=margin)(query, query_labels, memory, memory_labels)
    grads = torch.autograd.grad(loss, (query, memory))
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize('rule,margin', CASES)
def test_float32_matches_float64_reference(rule, margin):
    select, value = RULES[rule]
    emb, labels = make_batch(1)
    ref = value(emb, emb, select(emb, labels, margin))
    loss = losses.create(rule, margin=margin)(emb.float(), labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="--loss 'Hinge' is unknown; known: Con, SCon"):
        losses.create('Hinge')


def test_pair_similarity_stats():
    emb, labels = make_batch(0)
    mean_pos, mean_neg = losses.pair_similarity_stats(emb, labels)
    pos = [float(emb[i] @ emb[j]) for i in range(13) for j in range(13)
           if i != j and labels[i] == labels[j]]
    neg = [float(emb[i] @ emb[j]) for i in range(13) for j in range(13) if labels[i] != labels[j]]
    assert abs(float(mean_pos) - sum(pos) / len(pos)) < 1e-6
    assert abs(float(mean_neg) - sum(neg) / len(neg)) < 1e-6
    all_distinct = torch.arange(13)
    assert torch.isnan(losses.pair_similarity_stats(emb, all_distinct)[0])
