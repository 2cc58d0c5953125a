"""Triplet, Circle and SupCon in every form against the per-anchor loops of loss_reference.py,
in float64: selections, values and gradients, in a batch and against a dictionary."""
import pytest
import torch

import losses
from loss_reference import (both_sided_selection, circle_value, masks_to_selection,
                            supcon_selection, supcon_value, triplet_selection, triplet_value,
                            unit_rows)
from loss_reference import make_batch

TOL = dict(rtol=1e-10, atol=1e-10)

# name -> (params, reference selection(sim, labels, keys_labels, exclude_self), reference value)
REFERENCES = {
    'Triplet': ({'margin': 0.1},
                lambda sim, y, keys, exclude: triplet_selection(sim, y, keys, 0.1, exclude),
                lambda sim, n, chosen: triplet_value(sim, n, chosen, 0.1)),
    'Triplet-wide': ({'margin': 0.6},
                     lambda sim, y, keys, exclude: triplet_selection(sim, y, keys, 0.6, exclude),
                     lambda sim, n, chosen: triplet_value(sim, n, chosen, 0.6)),
    'Circle': ({}, lambda sim, y, keys, exclude: both_sided_selection(y, keys, exclude),
               lambda sim, n, chosen: circle_value(sim, n, chosen)),
    'Circle-m': ({'m': 0.25, 'gamma': 32.0},
                 lambda sim, y, keys, exclude: both_sided_selection(y, keys, exclude),
                 lambda sim, n, chosen: circle_value(sim, n, chosen, m=0.25, gamma=32.0)),
    'SupCon': ({}, lambda sim, y, keys, exclude: supcon_selection(y, keys, exclude),
               lambda sim, n, chosen: supcon_value(sim, n, chosen)),
    'SupCon-warm': ({'temperature': 0.5},
                    lambda sim, y, keys, exclude: supcon_selection(y, keys, exclude),
                    lambda sim, n, chosen: supcon_value(sim, n, chosen, 0.5)),
}
CASES = sorted(REFERENCES)


def rule_of(case):
    return case.split('-')[0]


def dot_sim(query, keys):
    return lambda i, j: (query[i] * keys[j]).sum()


def batches():
    """The shared edge-case batch (labels not 0..C-1, a singleton class, duplicates, a tight
    cluster) in three draws, and a batch of one class (no anchor has a negative)."""
    yield from (make_batch(seed) for seed in range(3))
    yield unit_rows(4, 6, 7), torch.tensor([9, 9, 9, 9])


@pytest.mark.parametrize('case', CASES)
def test_select_form_and_plain_value_and_gradient(case):
    params, select, value = REFERENCES[case]
    name = rule_of(case)
    for emb, labels in batches():
        chosen = select(dot_sim(emb, emb), labels, labels, True)
        masks = losses.create('S' + name, **params)(emb, labels)
        assert masks_to_selection(*masks) == chosen, case

        emb_ref = emb.clone().requires_grad_()
        ref = value(dot_sim(emb_ref, emb_ref), len(emb), chosen)
        ref_grad = (torch.autograd.grad(ref, emb_ref, allow_unused=True)[0]
                    if ref.requires_grad else None)
        emb_fast = emb.clone().requires_grad_()
        loss = losses.create(name, **params)(emb_fast, labels)
        (grad,) = torch.autograd.grad(loss, emb_fast)
        torch.testing.assert_close(loss, ref, **TOL)
        torch.testing.assert_close(grad, torch.zeros_like(grad) if ref_grad is None else ref_grad,
                                   **TOL)


def test_the_edge_cases_are_present():
    """The batches above do hold anchors without a positive, anchors without a negative, and
    anchors whose triplets are all inactive."""
    emb, labels = make_batch(0)
    singleton = (labels == 5).nonzero().item()
    pos_mask, neg_mask = losses.create('SSupCon')(emb, labels)
    assert not pos_mask[singleton].any() and not neg_mask[singleton].any()
    emb1, labels1 = unit_rows(4, 6, 7), torch.tensor([9, 9, 9, 9])
    assert float(losses.create('Circle')(emb1, labels1)) == 0.0  # no negatives anywhere
    pos_mask, _ = losses.create('STriplet', margin=0.1)(emb, labels)
    assert (pos_mask.sum(1) < (labels[:, None] == labels[None, :]).sum(1) - 1).any()


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('seed', range(2))
def test_global_form_against_a_loop_over_dictionary_entries(case, seed):
    params, select, value = REFERENCES[case]
    name = rule_of(case)
    query = unit_rows(6, 6, seed + 10)
    query_labels = torch.tensor([7, 7, 42, 3, 3, 99])  # 99 is absent from the dictionary
    memory = unit_rows(15, 6, seed + 20)
    memory[14] = query[0]  # a stored copy of a query
    memory[13] = memory[12]  # duplicate entries
    memory_labels = torch.tensor([7, 7, 7, 42, 3, 3, 3, 8, 8, 8, 15, 15, 61, 61, 7])
    chosen = select(dot_sim(query, memory), query_labels, memory_labels, False)
    query_ref, memory_ref = query.clone().requires_grad_(), memory.clone().requires_grad_()
    ref = value(dot_sim(query_ref, memory_ref), len(query), chosen)
    ref_grads = torch.autograd.grad(ref, (query_ref, memory_ref))
    query.requires_grad_(), memory.requires_grad_()
    loss = losses.create('G' + name, **params)(query, query_labels, memory, memory_labels)
    grads = torch.autograd.grad(loss, (query, memory))
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL)


def test_global_form_of_a_query_whose_class_fills_the_dictionary():
    """No negative stored: Triplet and Circle give 0; SupCon still has its positives' term."""
    query = unit_rows(2, 6, 1)
    memory = unit_rows(5, 6, 2)
    labels, memory_labels = torch.tensor([4, 4]), torch.tensor([4] * 5)
    assert float(losses.create('GTriplet')(query, labels, memory, memory_labels)) == 0
    assert float(losses.create('GCircle')(query, labels, memory, memory_labels)) == 0
    chosen = supcon_selection(labels, memory_labels, exclude_self=False)
    expected = supcon_value(dot_sim(query, memory), 2, chosen)
    got = losses.create('GSupCon')(query, labels, memory, memory_labels)
    assert float(expected) > 0
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize('case', CASES)
def test_gradient_weighted_form_against_the_loop(case):
    """L_W = sum_ij w_ij sg(dL/dS_ij) S_ij, with dL/dS from the loop reference on an explicit
    similarity matrix."""
    params, select, value = REFERENCES[case]
    name = rule_of(case)
    emb, labels = make_batch(1)
    chosen = select(dot_sim(emb, emb), labels, labels, True)
    sim = (emb @ emb.t()).requires_grad_()
    (dl_ds,) = torch.autograd.grad(value(lambda i, j: sim[i, j], len(emb), chosen), sim)
    weights = torch.rand(13, 13, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3)).requires_grad_()
    emb_ref = emb.clone().requires_grad_()
    ref = sum(weights[i, j] * dl_ds[i, j] * (emb_ref[i] * emb_ref[j]).sum()
              for i in range(13) for j in range(13) if dl_ds[i, j] != 0)
    ref_grads = torch.autograd.grad(ref, (emb_ref, weights))
    masks = losses.create('S' + name, **params)(emb, labels)
    emb_fast = emb.clone().requires_grad_()
    loss = losses.create('W' + name, pair_weights='gradient', **params)(
        emb_fast, labels, weights, *masks)
    grads = torch.autograd.grad(loss, (emb_fast, weights))
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **TOL)


def test_triplet_equals_the_sum_over_every_triplet_of_the_batch():
    """Mining changes nothing: the loss over all triplets, by brute force over [B, B, B]."""
    emb, labels = make_batch(2)
    sim = emb @ emb.t()
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(13, dtype=torch.bool)
    hinge = torch.relu(sim[:, None, :] - sim[:, :, None] + 0.3)  # [anchor, p, n]
    valid = pos[:, :, None] & ~same[:, None, :]
    expected = torch.where(valid, hinge, 0).sum() / 13
    torch.testing.assert_close(losses.create('Triplet', margin=0.3)(emb, labels), expected, **TOL)


def test_float32_matches_float64():
    emb, labels = make_batch(0)
    for name in ('Triplet', 'Circle', 'SupCon'):
        expected = losses.create(name)(emb, labels)
        got = losses.create(name)(emb.float(), labels)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
