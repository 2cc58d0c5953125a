"""Contrastive loss on cosine similarities (Hadsell et al. 2006, in the MMSI form).

For anchor i: sum over positives p of (1 - S_ip) plus sum over negatives n with S_in > margin
of S_in. The official weighted form (WCon) multiplies each pair's term by its weight.
"""
import torch
from losses.params import FINITE


class Contrastive:
    """Pair rule of the contrastive loss (contract: losses/forms.py)."""
    RANGES = {'margin': FINITE}

    def __init__(self, margin=0.5):
        self.margin = margin

    def mine(self, sim, pos_mask, neg_mask):
        """All positives; the negatives more similar than the margin."""
        return pos_mask, neg_mask & (sim > self.margin)

    # Against the semi-global dictionary the selection rule is the same.
    mine_global = mine

    def anchor_losses(self, sim, pos_sel, neg_sel):
        return self.official_weighted_losses(sim, pos_sel, neg_sel, None)

    def official_weighted_losses(self, sim, pos_sel, neg_sel, weights):
        """[rows] sum over the selected pairs of (1 - S)·w for positives and S·w for negatives
        (weights None: all 1)."""
        pos_terms = 1 - sim
        neg_terms = sim
        if weights is not None:
            pos_terms, neg_terms = pos_terms * weights, neg_terms * weights
        zero = sim.new_zeros(())
        return (torch.where(pos_sel, pos_terms, zero).sum(1)
                + torch.where(neg_sel, neg_terms, zero).sum(1))
