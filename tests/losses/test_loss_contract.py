"""The rule contract, checked for every entry of the loss registry: a rule registered later is
covered with no new test code."""
import pytest
import torch

import losses
from losses.pairs import batch_pairs
from models.meta_layers import meta_gradient
from tiny_network import META_LR, loss_closures, setup as meta_setup
from loss_reference import make_batch

TOL = dict(rtol=1e-10, atol=1e-10)
REGISTERED = sorted(losses.RULES)


def weightings(name):
    return ['official', 'gradient'] if losses.has_official_weights(name) else ['gradient']


# every registered rule with every pair-weight form it has
WEIGHTED = [(name, pair_weights) for name in REGISTERED for pair_weights in weightings(name)]


def test_the_registry_holds_the_five_losses_with_their_declared_defaults():
    assert {name: losses.parameters(name) for name in ('Con', 'MS', 'Triplet', 'Circle',
                                                        'SupCon')} == {
        'Con': {'margin': 0.5}, 'MS': {'margin': 0.1, 'alpha': 40.0, 'beta': 2.0, 'base': 0.5},
        'Triplet': {'margin': 0.1}, 'Circle': {'m': 0.4, 'gamma': 80.0},
        'SupCon': {'temperature': 0.1}}
    assert [n for n in losses.RULES if losses.has_official_weights(n)] == ['Con', 'MS']


@pytest.mark.parametrize('name', REGISTERED)
def test_select_masks_hold_exactly_the_contributing_pairs(name):
    """Every selected pair changes its anchor's loss or its gradient when removed; an anchor
    with no selected pair contributes 0 with zero gradient; mining is what the plain form
    uses. The second half of the draws has similarities in [0, 1] only: below that a pair's
    share can underflow in float64 (a Circle negative with S < -m adds exp(0) to a sum of
    exp(38)), and "changes" could not be observed."""
    rule = losses.RULES[name]()
    for seed in range(6):
        emb, labels = make_batch(seed % 3)
        if seed >= 3:
            emb = emb.abs()
        sim, pos_mask, neg_mask = batch_pairs(emb, labels)
        pos_sel, neg_sel = losses.create('S' + name)(emb, labels)
        assert not (pos_sel & ~pos_mask).any() and not (neg_sel & ~neg_mask).any()

        def anchor_values_and_grads(pos, neg):
            leaf = sim.clone().requires_grad_()
            values = rule.anchor_losses(leaf, pos, neg)
            (grad,) = torch.autograd.grad(values.sum(), leaf, allow_unused=True) \
                if values.requires_grad else (None,)
            return values.detach(), torch.zeros_like(sim) if grad is None else grad

        values, grads = anchor_values_and_grads(pos_sel, neg_sel)
        empty = ~(pos_sel | neg_sel).any(1)
        assert (values[empty] == 0).all() and (grads[empty] == 0).all()
        for i, j in (pos_sel | neg_sel).nonzero().tolist() if seed >= 3 else []:
            fewer_pos, fewer_neg = pos_sel.clone(), neg_sel.clone()
            fewer_pos[i, j] = fewer_neg[i, j] = False
            other_values, other_grads = anchor_values_and_grads(fewer_pos, fewer_neg)
            # any change at all: an MS negative far below the threshold adds exp(-20)-sized terms
            assert (other_values[i] != values[i]
                    or not torch.equal(other_grads[i], grads[i])), (name, seed, i, j)
        plain = losses.create(name)(emb, labels)
        torch.testing.assert_close(plain, values.sum() / len(emb), **TOL)


@pytest.mark.parametrize('name, pair_weights', WEIGHTED)
def test_weighted_form_at_one_has_the_plain_gradient_and_at_zero_none(name, pair_weights):
    emb, labels = make_batch(1)
    masks = losses.create('S' + name)(emb, labels)
    weighted = losses.create('W' + name, pair_weights=pair_weights)
    emb_plain = emb.clone().requires_grad_()
    plain = losses.create(name)(emb_plain, labels)
    (plain_grad,) = torch.autograd.grad(plain, emb_plain)
    emb_w = emb.clone().requires_grad_()
    (grad_at_one,) = torch.autograd.grad(
        weighted(emb_w, labels, torch.ones(13, 13, dtype=torch.float64), *masks), emb_w)
    torch.testing.assert_close(grad_at_one, plain_grad, **TOL)
    assert plain_grad.abs().max() > 1e-6
    zeros = torch.zeros(13, 13, dtype=torch.float64, requires_grad=True)
    grad_emb, grad_w = torch.autograd.grad(weighted(emb_w, labels, zeros, *masks), (emb_w, zeros))
    assert torch.count_nonzero(grad_emb) == 0
    assert torch.count_nonzero(grad_w) > 0
    selected = masks[0] | masks[1]
    assert torch.count_nonzero(grad_w[~selected]) == 0  # weights outside the pairs do nothing
    if pair_weights == 'official':  # the official forms also keep the plain value at w = 1
        ones = torch.ones(13, 13, dtype=torch.float64)
        torch.testing.assert_close(weighted(emb, labels, ones, *masks), plain.detach(), **TOL)


@pytest.mark.parametrize('name', REGISTERED)
def test_pair_weights_choices(name):
    expected = 'official' if losses.has_official_weights(name) else 'gradient'
    assert losses.create('W' + name).pair_weights == expected  # auto
    assert losses.create('W' + name, pair_weights='gradient').pair_weights == 'gradient'
    if expected == 'gradient':
        with pytest.raises(ValueError, match=f'{name} has no official weighted form .*'
                                             f'choose auto or gradient'):
            losses.create('W' + name, pair_weights='official')


@pytest.mark.parametrize('name, pair_weights', WEIGHTED)
def test_meta_gradient_exact_equals_jvp_in_float64(name, pair_weights):
    net, x, y, x_val, y_val, mem_emb, mem_labels = meta_setup(0)
    crit_s, crit_g = losses.create('S' + name), losses.create('G' + name)
    crit_w = losses.create('W' + name, pair_weights=pair_weights)
    pos_mask, neg_mask = crit_s(net(x).detach(), y)
    closures = loss_closures(crit_w, crit_g, y, pos_mask, neg_mask, y_val, mem_emb, mem_labels)
    grads = [meta_gradient(net, x, x_val, *closures, META_LR, method=method)[0]
             for method in ('exact', 'jvp')]
    scale = grads[0].abs().max()
    assert scale > 0, 'a vacuous comparison'
    assert (grads[0] - grads[1]).abs().max() <= 1e-8 * scale
    assert torch.count_nonzero(grads[0][~(pos_mask | neg_mask)]) == 0


def test_official_and_gradient_contrastive_weights_give_the_same_meta_gradient():
    net, x, y, x_val, y_val, mem_emb, mem_labels = meta_setup(1)
    crit_s, crit_g = losses.create('SCon', margin=0.1), losses.create('GCon', margin=0.1)
    pos_mask, neg_mask = crit_s(net(x).detach(), y)
    grads = []
    for pair_weights in ('official', 'gradient'):
        crit_w = losses.create('WCon', margin=0.1, pair_weights=pair_weights)
        closures = loss_closures(crit_w, crit_g, y, pos_mask, neg_mask, y_val, mem_emb,
                                 mem_labels)
        grads.append(meta_gradient(net, x, x_val, *closures, META_LR, method='exact')[0])
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_create_hands_a_rule_only_its_parameters():
    assert losses.create('Circle', m=0.3, gamma=64).rule.gamma == 64
    with pytest.raises(ValueError, match=r"MS has no parameter marign; its parameters: "
                                         r"margin \(default 0.1\), alpha"):
        losses.create('WMS', marign=0.1)
    with pytest.raises(ValueError, match='SupCon has no parameter margin; its parameters: '
                                         'temperature'):
        losses.create('SupCon', margin=0.5)
    with pytest.raises(ValueError, match='pair_weights applies to the weighted form'):
        losses.create('MS', pair_weights='gradient')


def test_register_checks_the_rule():
    class NoGlobal:
        def mine(self, sim, pos_mask, neg_mask):
            return pos_mask, neg_mask

        def anchor_losses(self, sim, pos_sel, neg_sel):
            return sim.sum(1)

    with pytest.raises(ValueError, match='NoGlobal lacks mine_global'):
        losses.register('NoGlobal', NoGlobal)
    with pytest.raises(ValueError, match="'SMS' would be read as a form of 'MS'"):
        losses.register('SMS', losses.RULES['MS'])
    assert 'NoGlobal' not in losses.RULES


def test_registering_a_taken_name_needs_replace_and_the_rule_is_named():
    class MyMS(losses.RULES['MS']):
        pass
    original = losses.RULES['MS']
    with pytest.raises(ValueError, match=r"loss name 'MS' is taken by "
                                         r"losses.multi_similarity.MultiSimilarity; register with "
                                         r"replace=True"):
        losses.register('MS', MyMS)
    assert losses.RULES['MS'] is original
    try:
        losses.register('MS', MyMS, replace=True)
        assert losses.rule_of('MS').endswith('MyMS')
    finally:
        losses.RULES['MS'] = original


def test_importing_the_same_rule_again_is_no_clash():
    """A --loss_module file imported twice registers a new class object of the same rule."""
    def make():
        class Again(losses.RULES['Con']):
            pass
        Again.__module__, Again.__qualname__ = 'my_module', 'Again'
        return Again
    try:
        losses.register('Again', make())
        losses.register('Again', make())
        assert losses.rule_of('Again') == 'my_module.Again'
    finally:
        losses.RULES.pop('Again', None)
