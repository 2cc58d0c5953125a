"""The meta-gradient: exact double-backward, forward-mode fast path, and an independent
per-pair computation agree on a small float64 network; the loss closures see the batch, the
validation batch and the zero pair weights."""
import pytest
import torch

import losses
from models.meta_layers import meta_gradient, normalize_weights
from tiny_network import META_LR, loss_closures, setup


def per_pair_reference(net, x, x_val, train_loss, val_loss):
    """g_k = -eta * grad_theta L_G(theta) . d/dw_k grad_theta L_W at w = 0, for every pair k of
    the batch (zero where L_W does not use w_k), with plain autograd on the module itself."""
    params = list(net.parameters())
    v = torch.autograd.grad(val_loss(net(x_val)), params)
    weights = torch.zeros(len(x), len(x), dtype=torch.float64, requires_grad=True)
    (d_loss_d_w,) = torch.autograd.grad(train_loss(net(x), weights), weights, create_graph=True)
    expected = torch.zeros(len(x), len(x), dtype=torch.float64)
    for i in range(len(x)):
        for j in range(len(x)):
            mixed = torch.autograd.grad(d_loss_d_w[i, j], params, retain_graph=True,
                                        allow_unused=True)
            expected[i, j] = -META_LR * sum((m * g).sum() for m, g in zip(mixed, v)
                                            if m is not None)
    return expected


def problem(seed, rule, margin=0.1):
    """The tiny network, its images, and the loss closures on the pairs the rule mines."""
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(seed)
    crit_s, crit_w, crit_g = (losses.create(p + rule, margin=margin) for p in 'SWG')
    pos_mask, neg_mask = crit_s(net(x), y)
    closures = loss_closures(crit_w, crit_g, y, pos_mask, neg_mask, y_val, mem_emb, mem_labels)
    return net, x, x_val, closures, pos_mask | neg_mask


@pytest.mark.parametrize('rule,margin', [('Con', 0.1), ('Con', -0.5), ('MS', 0.1), ('MS', 0.5)])
@pytest.mark.parametrize('seed', [0, 1])
def test_exact_jvp_and_per_pair_reference_agree(rule, margin, seed):
    net, x, x_val, closures, selected = problem(seed, rule, margin)
    assert selected.sum() >= 4
    exact, _ = meta_gradient(net, x, x_val, *closures, META_LR, method='exact')
    fast, _ = meta_gradient(net, x, x_val, *closures, META_LR, method='jvp')
    reference = per_pair_reference(net, x, x_val, *closures)
    scale = reference.abs().max()
    assert scale > 0
    assert torch.count_nonzero(exact[~selected]) == 0
    torch.testing.assert_close(exact, reference, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize('rule', ['Con', 'MS'])
def test_exact_and_jvp_weights_agree_to_1e8_in_float64(rule):
    net, x, x_val, closures, _ = problem(3, rule)
    exact, exact_val_loss = meta_gradient(net, x, x_val, *closures, META_LR, method='exact')
    fast, fast_val_loss = meta_gradient(net, x, x_val, *closures, META_LR, method='jvp')
    assert exact.dtype == fast.dtype == torch.float64
    torch.testing.assert_close(exact_val_loss, fast_val_loss, rtol=1e-12, atol=0)
    reference = per_pair_reference(net, x, x_val, *closures)
    scale = reference.abs().max()
    for got in (exact, fast):
        assert ((got - reference).abs().max() / scale) < 1e-8
    w_exact, w_fast = normalize_weights(exact), normalize_weights(fast)
    assert w_exact.dtype == w_fast.dtype == torch.float64  # weights in [0, 1], max 1
    assert ((w_exact - w_fast).abs().max()) < 1e-8


@pytest.mark.parametrize('method', ['exact', 'jvp'])
def test_the_closures_see_the_batch_the_validation_batch_and_zero_weights(method):
    """train_loss gets the B training embeddings and the w = 0 leaf [B, B]; val_loss the
    validation embeddings; g is zero wherever train_loss leaves the weight unused (here: a
    subset of the mined pairs chosen by the closure, not the masks); 'exact' reuses the
    embeddings the caller passes."""
    net, x, y, x_val, y_val, mem_emb, mem_labels = setup(2)
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    pos_mask, neg_mask = crit_s(net(x), y)
    used = torch.zeros_like(pos_mask)
    used[:4] = True  # the pairs of the first four anchors only
    train_seen, val_seen = [], []

    def train_loss(emb, pair_weights):
        train_seen.append((emb, pair_weights))
        return crit_w(emb, y, pair_weights, pos_mask & used, neg_mask & used)

    def val_loss(val_emb):
        val_seen.append(val_emb)
        return crit_g(val_emb, y_val, mem_emb, mem_labels)

    emb = net(x)
    grad, val_loss_value = meta_gradient(net, x, x_val, train_loss, val_loss, META_LR,
                                         method=method, emb=emb)
    assert len(train_seen) == len(val_seen) == 1
    (seen_emb, weights), (seen_val_emb,) = train_seen[0], val_seen
    torch.testing.assert_close(seen_emb, emb.detach(), rtol=1e-12, atol=0)
    assert (seen_emb is emb) == (method == 'exact')
    assert weights.shape == (8, 8) and weights.dtype == torch.float64
    assert weights.requires_grad and weights.grad_fn is None and not weights.any()
    torch.testing.assert_close(seen_val_emb, net(x_val).detach(), rtol=1e-12, atol=0)
    assert val_loss_value == crit_g(net(x_val), y_val, mem_emb, mem_labels).detach()
    assert grad.shape == (8, 8) and grad.dtype == torch.float64
    assert torch.count_nonzero(grad[~used]) == 0
    assert torch.count_nonzero(grad[(pos_mask | neg_mask) & used]) >= 4
    assert torch.count_nonzero(grad[(pos_mask | neg_mask) & ~used]) == 0


def test_val_loss_is_returned_detached_and_zero_when_no_val_pairs():
    net, x, y, x_val, _, mem_emb, mem_labels = setup(0)
    crit_s, crit_w, crit_g = (losses.create(p + 'MS', margin=0.1) for p in 'SWG')
    masks = crit_s(net(x), y)
    absent = torch.tensor([40, 41, 42])  # no positive in the dictionary: G-MS is exactly 0
    closures = loss_closures(crit_w, crit_g, y, *masks, absent, mem_emb, mem_labels)
    for method in ('exact', 'jvp'):
        grad, val_loss = meta_gradient(net, x, x_val, *closures, META_LR, method=method)
        assert val_loss == 0 and not val_loss.requires_grad
        assert torch.count_nonzero(grad) == 0
        assert normalize_weights(grad) is None
    _, val_loss = meta_gradient(net, x, x_val, *problem(0, 'MS')[3], META_LR)
    assert val_loss > 0 and not val_loss.requires_grad


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
        meta_gradient(*[None] * 6, method='hessian')


@pytest.mark.parametrize('method', ['exact', 'jvp'])
def test_a_scaled_validation_loss_scales_g_and_L_G_alike(method):
    """What the fp16 path of trainer_MMSI relies on: with val_loss times 1024 (against
    underflow), g and L_G come back 1024 times larger, so dividing both by the scale gives the
    unscaled ones, and the pair weights do not depend on it."""
    net, x, x_val, (train_loss, val_loss), _ = problem(1, 'MS')
    grad, loss_g = meta_gradient(net, x, x_val, train_loss, val_loss, META_LR, method=method)
    scaled_grad, scaled_loss_g = meta_gradient(
        net, x, x_val, train_loss, lambda val_emb: val_loss(val_emb) * 1024.0, META_LR,
        method=method)
    assert loss_g > 0 and grad.abs().max() > 0
    torch.testing.assert_close(scaled_loss_g / 1024.0, loss_g, rtol=1e-12, atol=0)
    torch.testing.assert_close(scaled_grad / 1024.0, grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(normalize_weights(scaled_grad), normalize_weights(grad))
