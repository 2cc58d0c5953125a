"""The functional "twin" of a network, for MMSI's virtual step.

The official code keeps a second copy of BN-Inception whose layers take their weights as
arguments. Here the twin is a view of the same module: `torch.func.functional_call` runs the
module with any dictionary of parameters, so the virtual parameters
theta' = theta - lr * grad are just another dictionary and nothing is copied or re-built.
"""
import torch
from torch.func import functional_call


def trainable_parameters(model):
    """name -> parameter, for the parameters that train."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def functional_forward(model, params, x):
    """model(x) with `params` in place of its trainable parameters (buffers as they are)."""
    return functional_call(model, (params, dict(model.named_buffers())), (x,), strict=False)


def virtual_parameters(params, loss, lr, create_graph=True):
    """theta' = theta - lr * d(loss)/d(theta), differentiable (by default) through the gradient."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                allow_unused=True)
    return {n: params[n] if g is None else params[n] - lr * g for n, g in zip(names, grads)}
