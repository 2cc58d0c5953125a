"""A small float64 embedding network and an MMSI problem for it (a batch, a validation batch,
a dictionary), shared by the meta-gradient, loss-contract, precision and trainer tests; and
the two loss closures that models.meta_layers.meta_gradient takes, bound as the MMSI step
binds them."""
import torch
from torch import nn
from torch.nn import functional as F

META_LR = 0.3


class TinyEmbedder(nn.Module):
    """Conv -> BN (eval) -> ReLU -> global max pool -> Linear -> L2 norm, like the real head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.linear = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.normalize(self.linear(x.amax(dim=(2, 3))), dim=1)


def setup(seed):
    torch.manual_seed(seed)
    net = TinyEmbedder().double().eval()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([1, 1, 2, 2, 3, 3, 4, 4])
    x_val = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    y_val = torch.tensor([1, 2, 5])
    mem_emb = F.normalize(torch.randn(10, 5, dtype=torch.float64), dim=1)
    mem_labels = torch.tensor([1, 1, 2, 3, 3, 5, 6, 6, 7, 2])
    return net, x, y, x_val, y_val, mem_emb, mem_labels


def loss_closures(crit_w, crit_g, y, pos_mask, neg_mask, y_val, mem_emb, mem_labels):
    """(train_loss, val_loss) for meta_gradient: L_W(emb, w) of a batch labelled y on the pairs
    (pos_mask, neg_mask), and L_G(val_emb) of a validation batch labelled y_val against the
    dictionary (mem_emb, mem_labels)."""
    def train_loss(emb, pair_weights):
        return crit_w(emb, y, pair_weights, pos_mask, neg_mask)

    def val_loss(val_emb):
        return crit_g(val_emb, y_val, mem_emb, mem_labels)
    return train_loss, val_loss
