"""The four forms in which MMSI uses a loss; each is a thin wrapper of one pair rule.

A pair rule (Contrastive, MultiSimilarity, Triplet, Circle, SupCon, or a user's own, registered
with `losses.register`) is a class whose constructor's keyword arguments are its parameters,
each with its default, and which provides
    mine(sim, pos_mask, neg_mask)          -> (pos_sel, neg_sel)  pairs the loss uses in a batch
    mine_global(sim, pos_mask, neg_mask)   -> (pos_sel, neg_sel)  pairs used against the dictionary
    anchor_losses(sim, pos_sel, neg_sel)   -> [rows]              each anchor's loss
and, only where the official code has one, the official weighted form
    official_weighted_losses(sim, pos_sel, neg_sel, weights) -> [rows].
`sim` is [B, B] (a batch against itself) or [Q, M] (queries against the dictionary); the masks
are bool of the same shape; mining sees `sim` detached. Every form sums the anchors' losses
and divides by the number of anchors (queries). docs/design.md ("Losses") states the contract
in full.

Pair weights (`pair_weights`, the Weighted form):
- 'official': the rule's `official_weighted_losses` (Con: each pair's term times its weight;
  MS: S replaced by w·S inside the exponentials).
- 'gradient': L_W(e, w) = sum_ij w_ij · sg(dL/dS_ij) · S_ij(e), with dL/dS the derivative of
  the plain loss on the given pairs at the current S, held constant (sg: stop-gradient). At
  w = 1 its gradient with respect to the embeddings is the plain loss's; for any rule.
  Its value is a first-order surrogate, not the loss; its gradients are what matter.

The one property MMSI's forward-mode meta-gradient relies on (models/meta_layers.py): at
weights 0 the Weighted form's gradient with respect to the embeddings is exactly 0, so the
virtual step leaves the parameters where they are (theta' = theta). Both forms have it; a
rule's official form that broke it would get wrong pair weights from `--meta_grad jvp`
(tests/losses/test_loss_contract.py checks every registered rule).
"""
import torch
from torch import nn

from losses.pairs import batch_pairs, cross_pairs


class _Form(nn.Module):
    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def extra_repr(self):
        return f'{type(self.rule).__name__}({vars(self.rule)})'


class Plain(_Form):
    """`crit(emb, labels)` -> loss: the loss on the pairs it mines in the batch."""

    def forward(self, emb, labels):
        sim, pos_mask, neg_mask = batch_pairs(emb, labels)
        pos_sel, neg_sel = self.rule.mine(sim.detach(), pos_mask, neg_mask)
        return self.rule.anchor_losses(sim, pos_sel, neg_sel).sum() / len(emb)


class Select(_Form):
    """`crit(emb, labels)` -> (pos_mask, neg_mask): bool [B, B], exactly the pairs the plain
    loss uses (rows of anchors that contribute nothing are empty)."""

    @torch.no_grad()
    def forward(self, emb, labels):
        sim, pos_mask, neg_mask = batch_pairs(emb, labels)
        return self.rule.mine(sim, pos_mask, neg_mask)


class Weighted(_Form):
    """`crit(emb, labels, weights, pos_mask, neg_mask)` -> loss over the given pairs with pair
    weights [B, B], in the `pair_weights` form ('official' or 'gradient', module docstring).
    With all weights 1 and the Select form's masks it has the plain loss's gradient (the
    official form also its value); at weights 0 its gradient with respect to emb is 0."""

    def __init__(self, rule, pair_weights):
        super().__init__(rule)
        self.pair_weights = pair_weights

    def forward(self, emb, labels, weights, pos_mask, neg_mask):
        sim = emb @ emb.t()
        if self.pair_weights == 'official':
            per_anchor = self.rule.official_weighted_losses(sim, pos_mask, neg_mask, weights)
            return per_anchor.sum() / len(emb)
        return (weights * similarity_gradient(self.rule, sim, pos_mask, neg_mask) * sim).sum()

    def extra_repr(self):
        return f'{super().extra_repr()}, pair_weights={self.pair_weights!r}'


def similarity_gradient(rule, sim, pos_sel, neg_sel):
    """dL/dS of the plain loss (anchors' losses summed, divided by their number) on the given
    pairs at `sim`, detached: zero outside the pairs that contribute."""
    with torch.enable_grad():
        sim = sim.detach().requires_grad_()
        loss = rule.anchor_losses(sim, pos_sel, neg_sel).sum() / len(sim)
        if not loss.requires_grad:  # a rule that returned constants: nothing to weight
            return torch.zeros_like(sim)
        (grad,) = torch.autograd.grad(loss, sim, allow_unused=True)
    return torch.zeros_like(sim) if grad is None else grad


class Global(_Form):
    """`crit(emb, labels, mem_emb, mem_labels)` -> loss of a batch of queries against the
    semi-global dictionary, averaged over the queries."""

    def forward(self, emb, labels, mem_emb, mem_labels):
        sim, pos_mask, neg_mask = cross_pairs(emb, labels, mem_emb.to(emb.dtype), mem_labels)
        pos_sel, neg_sel = self.rule.mine_global(sim.detach(), pos_mask, neg_mask)
        return self.rule.anchor_losses(sim, pos_sel, neg_sel).sum() / len(emb)
