"""Supervised contrastive loss (Khosla et al., NeurIPS 2020) on cosine similarities.

Each anchor i with at least one positive contributes
    -(1/|P_i|) sum_{p in P_i} [ S_ip / tau - log sum_{a in P_i or N_i} exp(S_ia / tau) ],
the anchor itself excluded (by index) from P_i and from the sum.
"""
import torch

from losses.pairs import masked_logsumexp
from losses.params import POSITIVE


class SupCon:
    """Pair rule of the SupCon loss (contract: losses/forms.py)."""
    RANGES = {'temperature': POSITIVE}

    def __init__(self, temperature=0.1):
        self.temperature = temperature

    def mine(self, sim, pos_mask, neg_mask):
        """Every pair of an anchor with a positive. An anchor whose only partner is one
        positive contributes exactly 0 (S/tau - log exp(S/tau)) and is left out too."""
        num_pos = pos_mask.sum(1, keepdim=True)
        keep = (num_pos > 1) | ((num_pos == 1) & neg_mask.any(1, keepdim=True))
        return pos_mask & keep, neg_mask & keep

    mine_global = mine

    def anchor_losses(self, sim, pos_sel, neg_sel):
        logits = sim / self.temperature
        num_pos = pos_sel.sum(1)
        mean_pos_logit = torch.where(pos_sel, logits, 0).sum(1) / num_pos.clamp(min=1)
        losses = masked_logsumexp(logits, pos_sel | neg_sel) - mean_pos_logit
        return torch.where(num_pos > 0, losses, 0)
