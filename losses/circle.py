"""Circle loss (Sun et al., CVPR 2020) on cosine similarities.

For anchor i, with alpha_p = relu(1 + m - S_ip) and alpha_n = relu(S_in + m) held constant:
    softplus( logsumexp_n gamma alpha_n (S_in - m) + logsumexp_p -gamma alpha_p (S_ip - (1 - m)) ).
Every positive and negative takes part; an anchor without a positive or a negative contributes 0.
"""
import torch
from torch.nn import functional as F

from losses.pairs import drop_one_sided_rows, masked_logsumexp
from losses.params import FINITE, POSITIVE


class Circle:
    """Pair rule of the Circle loss (contract: losses/forms.py)."""
    RANGES = {'m': FINITE, 'gamma': POSITIVE}

    def __init__(self, m=0.4, gamma=80.0):
        self.m = m
        self.gamma = gamma

    def mine(self, sim, pos_mask, neg_mask):
        return drop_one_sided_rows(pos_mask, neg_mask)

    mine_global = mine

    def anchor_losses(self, sim, pos_sel, neg_sel):
        alpha_p = torch.relu(1 + self.m - sim.detach())
        alpha_n = torch.relu(sim.detach() + self.m)
        pos_logits = -self.gamma * alpha_p * (sim - (1 - self.m))
        neg_logits = self.gamma * alpha_n * (sim - self.m)
        both = pos_sel.any(1) & neg_sel.any(1)
        losses = F.softplus(masked_logsumexp(neg_logits, neg_sel)
                            + masked_logsumexp(pos_logits, pos_sel))
        return torch.where(both, losses, 0)
