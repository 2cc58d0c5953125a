"""Multi-Similarity loss (Wang et al. 2019) in the form of the official MMSI code.

For anchor i, negatives are selected when S_in + margin > min_p S_ip and positives when
S_ip - margin < max_n S_in; if either selection is empty the anchor contributes 0, else
    (2/beta) log(1 + sum_p exp(-beta (S_ip - base))) + (2/alpha) log(1 + sum_n exp(alpha (S_in - base))).
The factor 2 is the official MMSI code's (the MS paper has 1). The official weighted form
(WMS) replaces S by w·S inside the exponentials.
"""
import torch

from losses.pairs import drop_one_sided_rows
from losses.params import FINITE, POSITIVE


class MultiSimilarity:
    """Pair rule of the MS loss (contract: losses/forms.py)."""
    RANGES = {'margin': FINITE, 'alpha': POSITIVE, 'beta': POSITIVE, 'base': FINITE}

    def __init__(self, margin=0.1, alpha=40.0, beta=2.0, base=0.5):
        self.margin = margin
        self.alpha = alpha  # negative scale
        self.beta = beta  # positive scale
        self.base = base  # lambda

    def mine(self, sim, pos_mask, neg_mask):
        hardest_pos = sim.masked_fill(~pos_mask, float('inf')).amin(1, keepdim=True)
        hardest_neg = sim.masked_fill(~neg_mask, float('-inf')).amax(1, keepdim=True)
        neg_sel = neg_mask & (sim + self.margin > hardest_pos)
        pos_sel = pos_mask & (sim - self.margin < hardest_neg)
        return drop_one_sided_rows(pos_sel, neg_sel)

    def mine_global(self, sim, pos_mask, neg_mask):
        """No mining against the dictionary: every positive and negative entry."""
        return drop_one_sided_rows(pos_mask, neg_mask)

    def anchor_losses(self, sim, pos_sel, neg_sel):
        return self.official_weighted_losses(sim, pos_sel, neg_sel, None)

    def official_weighted_losses(self, sim, pos_sel, neg_sel, weights):
        """[rows] the MS terms with S replaced by w·S (weights None: all 1)."""
        scaled = sim if weights is None else weights * sim
        pos_loss = _log_one_plus_sum_exp(-self.beta * (scaled - self.base), pos_sel)
        neg_loss = _log_one_plus_sum_exp(self.alpha * (scaled - self.base), neg_sel)
        return 2.0 / self.beta * pos_loss + 2.0 / self.alpha * neg_loss


def _log_one_plus_sum_exp(x, mask):
    """Row-wise log(1 + sum over mask of exp(x)), stable, 0 (with zero gradient) for empty rows."""
    x = x.masked_fill(~mask, float('-inf'))
    return torch.logsumexp(torch.cat([x.new_zeros(len(x), 1), x], dim=1), dim=1)
