"""The four forms in which MMSI uses a pair loss; each is a thin wrapper of one pair rule.

A pair rule (Contrastive, MultiSimilarity) provides
    mine(sim, pos_mask, neg_mask)          -> (pos_sel, neg_sel)  pairs the loss uses in a batch
    mine_global(sim, pos_mask, neg_mask)   -> (pos_sel, neg_sel)  pairs used against the dictionary
    anchor_losses(sim, pos_sel, neg_sel, weights=None) -> [rows]  each anchor's loss
and every form averages the anchors' losses over the number of anchors (queries).
docs/design.md ("Losses") states the contract in full.

The one property MMSI's forward-mode meta-gradient relies on (models/meta_layers.py): at
weights 0 the Weighted form's gradient with respect to the embeddings is exactly 0, so the
virtual step leaves the parameters where they are (theta' = theta). A rule whose weighted loss
breaks it would get wrong pair weights from `--meta_grad jvp`; tests/losses check it.
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
    weights [B, B]. Where a weight enters is the rule's choice: Contrastive multiplies each
    pair's term by it; MS replaces S by w·S inside its exponentials (the official code's form),
    so there a weight scales the similarity, not the term. With all weights 1 and the Select
    form's masks it equals the plain loss; at weights 0 its gradient with respect to emb is 0
    (see the module docstring)."""

    def forward(self, emb, labels, weights, pos_mask, neg_mask):
        sim = emb @ emb.t()
        return self.rule.anchor_losses(sim, pos_mask, neg_mask, weights).sum() / len(emb)


class Global(_Form):
    """`crit(emb, labels, mem_emb, mem_labels)` -> loss of a batch of queries against the
    semi-global dictionary, averaged over the queries."""

    def forward(self, emb, labels, mem_emb, mem_labels):
        sim, pos_mask, neg_mask = cross_pairs(emb, labels, mem_emb.to(emb.dtype), mem_labels)
        pos_sel, neg_sel = self.rule.mine_global(sim.detach(), pos_mask, neg_mask)
        return self.rule.anchor_losses(sim, pos_sel, neg_sel).sum() / len(emb)
