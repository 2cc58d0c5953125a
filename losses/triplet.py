"""Triplet loss on cosine similarities, over every triplet of the batch.

For anchor i: sum over positives p and negatives n of relu(S_in - S_ip + margin).
Mining keeps the positives and negatives that take part in at least one triplet with a positive
hinge; the other pairs contribute nothing, to the value or the gradient.
"""
import torch
from losses.params import FINITE


class Triplet:
    """Pair rule of the triplet loss (contract: losses/forms.py)."""
    RANGES = {'margin': FINITE}

    def __init__(self, margin=0.1):
        self.margin = margin

    def mine(self, sim, pos_mask, neg_mask):
        """p is kept when S_ip < S_in + margin for some negative n, n when some positive p has
        S_ip < S_in + margin: i.e. comparisons with the hardest negative / positive."""
        hardest_pos = sim.masked_fill(~pos_mask, float('inf')).amin(1, keepdim=True)
        hardest_neg = sim.masked_fill(~neg_mask, float('-inf')).amax(1, keepdim=True)
        pos_sel = pos_mask & (sim < hardest_neg + self.margin)
        neg_sel = neg_mask & (sim + self.margin > hardest_pos)
        return pos_sel, neg_sel

    # The validation queries against the dictionary: the same rule.
    mine_global = mine

    def anchor_losses(self, sim, pos_sel, neg_sel):
        """[rows] sum over selected (p, n) of relu(S_n - S_p + margin).

        Without the [rows, C, C] tensor of all triplets (the dictionary of SOP has 56k rows):
        for a negative n, every positive with S_p < S_n + margin contributes S_n + margin - S_p,
        so with each row's positives sorted, one binary search gives their count c_n and a
        cumulative sum their total; n contributes c_n (S_n + margin) - total.
        """
        shifted = sim + self.margin  # S_n + margin, for every column n
        pos_sorted, _ = torch.sort(sim.masked_fill(~pos_sel, float('inf')), dim=1)
        finite = torch.isfinite(pos_sorted)
        prefix_sums = torch.cat([sim.new_zeros(len(sim), 1),
                                 torch.where(finite, pos_sorted, 0).cumsum(1)], dim=1)
        count = torch.searchsorted(pos_sorted.detach().contiguous(),
                                   shifted.detach().contiguous())  # #{p : S_p < S_n + margin}
        per_negative = count * shifted - prefix_sums.gather(1, count)
        return torch.where(neg_sel, per_negative, 0).sum(1)
