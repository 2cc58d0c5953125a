"""Losses by the official names: `create(name, margin=..., alpha=40, beta=2)`.

| name            | form     | call                                         | returns            |
|-----------------|----------|----------------------------------------------|--------------------|
| Con, MS         | plain    | crit(emb, labels)                            | loss               |
| SCon, SMS       | select   | crit(emb, labels)                            | (pos_mask, neg_mask)|
| WCon, WMS       | weighted | crit(emb, labels, weights, pos_mask, neg_mask)| loss              |
| GCon, GMS       | global   | crit(emb, labels, mem_emb, mem_labels)       | loss               |

Adding a loss: one file with its pair rule (mine / mine_global / anchor_losses) and one line in
RULES.
"""
from typing import NamedTuple

from torch import nn

from losses.contrastive import Contrastive
from losses.forms import Global, Plain, Select, Weighted
from losses.multi_similarity import MultiSimilarity
from losses.pairs import pair_similarity_stats
from utils.errors import InputError

RULES = {'Con': Contrastive, 'MS': MultiSimilarity}
FORMS = {'': Plain, 'S': Select, 'W': Weighted, 'G': Global}


def names():
    return [prefix + rule for rule in RULES for prefix in FORMS]


def create(name, margin=0.5, alpha=40.0, beta=2.0):
    prefix, rule = ('', name) if name in RULES else (name[:1], name[1:])
    if prefix not in FORMS or rule not in RULES:
        raise InputError(f"--loss {name!r} is unknown; known: {', '.join(names())}")
    return FORMS[prefix](RULES[rule](margin=margin, alpha=alpha, beta=beta))


class LossForms(NamedTuple):
    """The four forms of one loss, as a training run uses them."""
    plain: nn.Module        # crit(emb, labels) -> loss
    select: nn.Module       # crit(emb, labels) -> (pos_mask, neg_mask)
    weighted: nn.Module     # crit(emb, labels, weights, pos_mask, neg_mask) -> loss
    semi_global: nn.Module  # crit(emb, labels, mem_emb, mem_labels) -> loss


def forms_of(name, **params):
    """Every form of loss `name` (Con, MS, ...) with the same parameters."""
    return LossForms(*(create(prefix + name, **params) for prefix in ('', 'S', 'W', 'G')))


__all__ = ['create', 'forms_of', 'names', 'pair_similarity_stats', 'LossForms', 'RULES',
           'FORMS']
