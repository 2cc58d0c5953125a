"""MMSI's meta step: the derivative of the validation loss with respect to the pair weights.

Notation (docs/design.md, "The meta-gradient"): L_W(e, w) is the weighted loss of the training
batch's embeddings e = f(x; theta) with pair weights w [B, B] (zero outside the selected pairs),
theta' = theta - eta * grad_theta L_W is the virtual step, and L_G the loss of the validation
batch embedded with theta' against the semi-global dictionary. The pair weights are derived
from g = dL_G/dw at w = 0.

The two losses come in as closures, as in functorch's MAML example: the caller
(trainer_MMSI.mmsi_step) binds the labels, the mined pairs, the dictionary, the loss forms and,
under fp16, a scale of L_G; this module sees only

    train_loss(emb, pair_weights) -> L_W      val_loss(val_emb) -> L_G

and deals with the network, its parameters and the derivatives alone.

Two ways to get g:
- 'exact': the reference. Build theta' with a differentiable gradient (create_graph=True), embed
  the validation batch through `functional_call` with theta', differentiate L_G back to w.
  Costs a second-order backward through the network.
- 'jvp' (default): both weighted losses have grad_theta L_W = 0 at w = 0, so theta' = theta and
      g = -eta * d/dw [ grad_e L_W(e, w) . e_dot ],  e_dot = J_theta f(x) v,  v = grad_theta L_G(theta).
  v needs one forward/backward of the validation batch, e_dot one forward-mode product through
  the training batch; what remains is a derivative of the loss alone (B x D, cheap).
"""
import warnings

import torch
import torch.autograd.forward_ad as fwAD

from models.BN_Inception_MetaAda import (functional_forward, trainable_parameters,
                                         virtual_parameters)

METHODS = ('jvp', 'exact')


def meta_gradient(model, images, val_images, train_loss, val_loss, meta_lr, method='jvp',
                  emb=None):
    """(g, L_G): g = dL_G/dw at w = 0 as a [B, B] tensor (B = len(images)), in float32 (or the
    model's wider dtype, float64), and L_G detached.

    `train_loss(emb, pair_weights)` is L_W of the training batch's embeddings [B, D] with pair
    weights [B, B]; `val_loss(val_emb)` is L_G of the validation batch's embeddings. Both return
    0-d tensors. g is zero wherever `train_loss` does not use the weight. `meta_lr` is eta.

    `model` maps images to embeddings with BN already in eval mode; a models.precision wrapper
    with autocast on is run through its float32 view. `emb` may pass f(images) for 'exact' when
    the caller has it with its graph to the parameters ('jvp' gets f(images) from its own
    forward pass).
    """
    if method not in METHODS:
        raise ValueError(f'--meta_grad {method!r} is unknown; choose one of {METHODS}')
    if getattr(model, 'amp_dtype', None) is not None:
        # Under autocast: the whole meta step in float32 (the pair weights hinge on small
        # differences of derivatives); only the pair masks come from the half-precision batch.
        model, emb = model.full_precision, None
    compute = _exact_meta_gradient if method == 'exact' else _jvp_meta_gradient
    grad, loss_g = compute(model, images, val_images, train_loss, val_loss, meta_lr, emb)
    grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
    return grad, loss_g.detach()


WEIGHT_NORMS = ('max', 'mean')  # --weight_norm


def normalize_weights(grad, selected=None, by='max'):
    """Pair weights from the meta-gradient: relu(-g) divided by its maximum (`by='max'`, the
    official normalisation: weights in [0, 1] with maximum 1) or by its mean over the
    `selected` pairs (`by='mean'`, --weight_norm mean: the selected pairs' mean weight is 1, so
    the loss keeps plain training's scale), in float32 or the gradient's wider precision.

    Returns None when no pair has a negative derivative (max is 0): the iteration is skipped,
    where the official code divides 0 by 0 and puts NaN into the model.
    """
    helpful = torch.relu(-grad.to(torch.promote_types(grad.dtype, torch.float32)))
    top = helpful.max()
    if not torch.isfinite(top) or top <= 0:  # one host sync per iteration: the skip decision
        return None
    if by == 'max':
        return (helpful / top).detach()
    if by != 'mean':
        raise ValueError(f'normalize_weights: by={by!r}, expected one of {WEIGHT_NORMS}')
    mean = torch.where(selected, helpful, 0).sum() / selected.sum()
    if not mean > 0:  # every helpful pair outside the selection: nothing to weight
        return None
    return (helpful / mean).detach()


MMSI_WEIGHTS = ('learned', 'shuffled', 'kind_mean')  # --mmsi_weights


def control_weights(weights, pos_mask, neg_mask, control, generator=None):
    """The pair weights under a control of --mmsi_weights, kind by kind (the selected positive
    pairs, then the selected negative pairs): 'shuffled' permutes a kind's weights among its
    pairs (same values, assignment destroyed; `generator` draws the permutation on the CPU),
    'kind_mean' gives each pair its kind's mean weight (scale per kind kept, variation within
    it gone). Pairs outside both masks keep their weight (zero)."""
    controlled = weights.clone()
    for mask in (pos_mask, neg_mask):
        values = weights[mask]
        if not len(values):
            continue
        if control == 'shuffled':
            order = torch.randperm(len(values), generator=generator).to(values.device)
            controlled[mask] = values[order]
        elif control == 'kind_mean':
            controlled[mask] = values.mean()
        else:
            raise ValueError(f'control_weights: {control!r}, expected one of {MMSI_WEIGHTS[1:]}')
    return controlled


def _forward_mode_product(model, params, direction, x):
    """(f(x), e_dot = J_theta f(x) . direction), detached, by one forward pass with dual-number
    parameters.

    torch.autograd.forward_ad is used rather than torch.func.jvp: same numbers, about 12% faster
    on the CPU for BN-Inception (no functorch wrapping of every operation)."""
    with warnings.catch_warnings():
        # On first use torch compiles its own forward-mode rules with torch.jit.script and warns
        # about that deprecated call of its own; nothing here to act on.
        warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated')
        with torch.no_grad(), fwAD.dual_level():
            dual = {n: fwAD.make_dual(p.detach(), direction[n]) for n, p in params.items()}
            primal, tangent = fwAD.unpack_dual(functional_forward(model, dual, x))
            return primal, tangent


def _zero_weights(emb):
    """The leaf w = 0, [B, B] for the B rows of `emb`, in their dtype and on their device."""
    return torch.zeros((len(emb), len(emb)), dtype=emb.dtype, device=emb.device,
                       requires_grad=True)


def _exact_meta_gradient(model, images, val_images, train_loss, val_loss, meta_lr, emb):
    params = trainable_parameters(model)
    if emb is None or emb.grad_fn is None:
        emb = functional_forward(model, params, images)
    weights = _zero_weights(emb)
    virtual = virtual_parameters(params, train_loss(emb, weights), meta_lr, create_graph=True)
    loss_g = val_loss(functional_forward(model, virtual, val_images))
    (grad,) = torch.autograd.grad(loss_g, weights, allow_unused=True)
    return (torch.zeros_like(weights) if grad is None else grad), loss_g


def _jvp_meta_gradient(model, images, val_images, train_loss, val_loss, meta_lr, emb):
    del emb  # the forward-mode pass below gives f(images) itself
    params = trainable_parameters(model)
    loss_g = val_loss(functional_forward(model, params, val_images))
    names = list(params)
    val_grads = torch.autograd.grad(loss_g, [params[n] for n in names], allow_unused=True)
    direction = {n: torch.zeros_like(params[n]) if g is None else g
                 for n, g in zip(names, val_grads)}
    emb, tangent = _forward_mode_product(model, params, direction, images)
    emb = emb.requires_grad_()
    weights = _zero_weights(emb)
    (grad_emb,) = torch.autograd.grad(train_loss(emb, weights), emb, create_graph=True)
    directional = (grad_emb * tangent).sum()
    (grad,) = torch.autograd.grad(directional, weights, allow_unused=True)
    grad = torch.zeros_like(weights) if grad is None else -meta_lr * grad
    return grad, loss_g
