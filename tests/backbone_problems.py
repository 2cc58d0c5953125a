"""Inputs for the backbone tests (ResNet-50, ViT-S/16): Caffe-convention images and a small
float64 MMSI problem, with the one call of models.meta_layers.meta_gradient they share (a helper
module: test modules import it, never each other)."""
import torch
import torch.nn.functional as F

import losses
from models.meta_layers import meta_gradient
from tiny_network import META_LR, loss_closures


def images(batch, width, seed=1, dtype=torch.float32):
    """Caffe-convention images (BGR 0-255 minus the mean): values of a few tens."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, width, width, generator=generator) * 50).to(dtype)


def meta_gradients(net, problem, methods=('exact', 'jvp')):
    """The one place this file calls models.meta_layers.meta_gradient: {method: dL_G/dw}."""
    x, y, pos_mask, neg_mask, x_val, y_val, mem_emb, mem_labels, crit_w, crit_g = problem
    train_loss, val_loss = loss_closures(crit_w, crit_g, y, pos_mask, neg_mask, y_val,
                                         mem_emb, mem_labels)
    return {method: meta_gradient(net, x, x_val, train_loss, val_loss, META_LR,
                                  method=method)[0]
            for method in methods}


def mmsi_problem(net, rule, width=32):
    """A float64 MMSI problem: 6 training images of 3 classes, 3 validation images, a
    dictionary of 8 entries; masks from the loss's Select form."""
    generator = torch.Generator().manual_seed(7)
    x = images(6, width, seed=2, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x_val = images(3, width, seed=3, dtype=torch.float64)
    y_val = torch.tensor([0, 1, 9])
    mem_emb = F.normalize(torch.randn(8, net.dim, generator=generator, dtype=torch.float64), dim=1)
    mem_labels = torch.tensor([0, 0, 1, 1, 2, 5, 9, 9])
    crit_s, crit_w, crit_g = (losses.create(prefix + rule, margin=0.1) for prefix in 'SWG')
    with torch.no_grad():
        pos_mask, neg_mask = crit_s(net(x), y)
    assert (pos_mask | neg_mask).sum() >= 4
    return x, y, pos_mask, neg_mask, x_val, y_val, mem_emb, mem_labels, crit_w, crit_g
