"""The meta-gradient: exact double-backward, forward-mode fast path, and an independent
per-pair computation agree on a small float64 network."""
import pytest
import torch

import losses
from models.meta_layers import meta_gradient, normalize_weights
from tiny_network import META_LR, setup

def per_pair_reference(net, x, y, pos_mask, neg_mask, x_val, y_val, mem_emb, mem_labels,
                       crit_w, crit_g):
    """g_k = -eta * grad_theta L_G(theta) . d/dw_k grad_theta L_W at w = 0, pair by pair."""
    params = [p for p in net.parameters()]
    v = torch.autograd.grad(crit_g(net(x_val), y_val, mem_emb, mem_labels), params)
    expected = torch.zeros(len(y), len(y), dtype=torch.float64)
    for i, j in (pos_mask | neg_mask).nonzero().tolist():
        weights = torch.zeros(len(y), len(y), dtype=torch.float64, requires_grad=True)
        loss_w = crit_w(net(x), y, weights, pos_mask, neg_mask)
        d_loss_d_wk = torch.autograd.grad(loss_w, weights, create_graph=True)[0][i, j]
        mixed = torch.autograd.grad(d_loss_d_wk, params)
        expected[i, j] = -META_LR * sum((m * g).sum() for m, g in zip(mixed, v))
    return expected


@pytest.mark.parametrize('rule,margin', [('Con', 0.1), ('Con', -0.5), ('MS', 0.1), ('MS', 0.5)])
@pytest.mark.parametrize('seed', [0, 1])
def test_exact_jvp_and_per_pair_reference_agree(rule, margin, seed):
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(seed)
    crit_s, crit_w, crit_g = (losses.create(p + rule, margin=margin) for p in 'SWG')
    pos_mask, neg_mask = crit_s(net(x), y)
    assert (pos_mask | neg_mask).sum() >= 4
    args = (net, x, y, pos_mask, neg_mask, x_val, y_val, mem_emb, mem_labels, crit_w, crit_g,
            META_LR)
    exact = meta_gradient(*args, method='exact')
    fast = meta_gradient(*args, method='jvp')
    reference = per_pair_reference(net, x, y, pos_mask, neg_mask, x_val, y_val, mem_emb,
                                   mem_labels, crit_w, crit_g)
    scale = reference.abs().max()
    assert scale > 0
    assert torch.count_nonzero(exact[~(pos_mask | neg_mask)]) == 0
    torch.testing.assert_close(exact, reference, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_exact_and_jvp_weights_agree_to_1e8_in_float64(rule):
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(3)
    crit_s, crit_w, crit_g = (losses.create(p + rule, margin=0.1) for p in 'SWG')
    pos_mask, neg_mask = crit_s(net(x), y)
    args = (net, x, y, pos_mask, neg_mask, x_val, y_val, mem_emb, mem_labels, crit_w, crit_g,
            META_LR)
    exact = meta_gradient(*args, method='exact')
    fast = meta_gradient(*args, method='jvp')
    assert exact.dtype == fast.dtype == torch.float64
    reference = per_pair_reference(net, x, y, pos_mask, neg_mask, x_val, y_val, mem_emb,
                                   mem_labels, crit_w, crit_g)
    scale = reference.abs().max()
    for got in (exact, fast):
        assert ((got - reference).abs().max() / scale) < 1e-8
    w_exact, w_fast = normalize_weights(exact), normalize_weights(fast)
    assert w_exact.dtype == w_fast.dtype == torch.float64  # weights in [0, 1], max 1
    assert ((w_exact - w_fast).abs().max()) < 1e-8


def test_val_loss_is_returned_and_zero_when_no_val_pairs():
    net, x, y, x_val, _, mem_emb, mem_labels = setup(0)
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    masks = crit_s(net(x), y)
    absent = torch.tensor([40, 41, 42])  # no positive in the dictionary: G-MS is exactly 0
    for method in ('exact', 'jvp'):
        grad, val_loss = meta_gradient(net, x, y, *masks, x_val, absent, mem_emb, mem_labels,
                                       crit_w, crit_g, META_LR, method=method,
                                       return_val_loss=True)
        assert val_loss == 0 and torch.count_nonzero(grad) == 0
        assert normalize_weights(grad) is None


def test_normalize_weights():
    grad = torch.tensor([[0.0, -2.0, 1.0], [-0.5, 0.0, 3.0], [0.0, 0.0, -1.0]])
    weights = normalize_weights(grad)
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.0, 0.5]])
    torch.testing.assert_close(weights, expected)
    assert normalize_weights(torch.zeros(3, 3)) is None
    assert normalize_weights(torch.ones(3, 3)) is None  # no pair helps: skip
    assert normalize_weights(torch.full((2, 2), float('nan'))) is None


def test_unknown_method():
    with pytest.raises(ValueError, match='--meta_grad'):
        meta_gradient(*[None] * 12, method='hessian')


@pytest.mark.parametrize('method', ['exact', 'jvp'])
def test_val_loss_scale_is_divided_back_out(method):
    """The fp16 path scales L_G by VAL_LOSS_SCALE against underflow: the gradient and L_G
    come back unscaled, so the pair weights are those of the unscaled loss."""
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(1)
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    masks = crit_s(net(x), y)
    args = (net, x, y, *masks, x_val, y_val, mem_emb, mem_labels, crit_w, crit_g, META_LR)
    grad, val_loss = meta_gradient(*args, method=method, return_val_loss=True)
    scaled_grad, scaled_val_loss = meta_gradient(*args, method=method, return_val_loss=True,
                                                 val_loss_scale=1024.0)
    assert val_loss > 0 and grad.abs().max() > 0
    torch.testing.assert_close(scaled_val_loss, val_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(scaled_grad, grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(normalize_weights(scaled_grad), normalize_weights(grad))
