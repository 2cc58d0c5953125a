"""Losses by name: `create(name, **params)`, and the registry of pair rules.

| name                        | form     | call                                           | returns              |
|-----------------------------|----------|------------------------------------------------|----------------------|
| Con, MS, Triplet, ...       | plain    | crit(emb, labels)                              | loss                 |
| SCon, SMS, STriplet, ...    | select   | crit(emb, labels)                              | (pos_mask, neg_mask) |
| WCon, WMS, WTriplet, ...    | weighted | crit(emb, labels, weights, pos_mask, neg_mask) | loss                 |
| GCon, GMS, GTriplet, ...    | global   | crit(emb, labels, mem_emb, mem_labels)         | loss                 |

Each rule owns its parameters: the keyword arguments of its constructor, with their defaults
(`parameters('MS')` -> {'margin': 0.1, 'alpha': 40.0, 'beta': 2.0, 'base': 0.5}), and their
ranges (`RANGES`, losses/params.py). `create` hands a rule exactly the parameters given,
checked against their type and range, and refuses one the rule does not declare. The
weighted form takes `pair_weights` ('auto', 'official' or 'gradient'; losses/forms.py).

A loss of one's own: a class with mine / mine_global / anchor_losses (losses/forms.py) and
`register('MyLoss', MyRule)`; it then has all four forms, `--loss MyLoss` and MMSI.
"""
import inspect
from typing import NamedTuple

from torch import nn

from losses.circle import Circle
from losses.contrastive import Contrastive
from losses.forms import Global, Plain, Select, Weighted
from losses.multi_similarity import MultiSimilarity
from losses.pairs import pair_similarity_stats
from losses.params import check as check_params
from losses.supcon import SupCon
from losses.triplet import Triplet
from common.errors import InputError

RULES = {'Con': Contrastive, 'MS': MultiSimilarity, 'Triplet': Triplet, 'Circle': Circle,
         'SupCon': SupCon}
FORMS = {'': Plain, 'S': Select, 'W': Weighted, 'G': Global}
PAIR_WEIGHTS = ('auto', 'official', 'gradient')
RULE_METHODS = ('mine', 'mine_global', 'anchor_losses')


class LossForms(NamedTuple):
    """The four forms of one loss, as a training run uses them."""
    plain: nn.Module        # crit(emb, labels) -> loss
    select: nn.Module       # crit(emb, labels) -> (pos_mask, neg_mask)
    weighted: nn.Module     # crit(emb, labels, weights, pos_mask, neg_mask) -> loss
    semi_global: nn.Module  # crit(emb, labels, mem_emb, mem_labels) -> loss


def register(name, rule_cls, replace=False):
    """Make pair rule `rule_cls` available as loss `name` (and S/W/G + name). A name that is
    taken (a built-in loss, or one registered before) is refused unless `replace` is True;
    the run's log names the rule that ran (`rule_of`)."""
    if not name.isidentifier():
        raise ValueError(f'loss name {name!r}: expected a Python identifier')
    if name in RULES and rule_of(name) != _where(rule_cls) and not replace:
        raise ValueError(f'loss name {name!r} is taken by {rule_of(name)}; register with '
                         f'replace=True to replace it, or choose another name')
    clashes = [other for other in RULES if other != name and
               (other == name[1:] and name[0] in FORMS or name == other[1:] and other[0] in FORMS)]
    if clashes:
        raise ValueError(f'loss name {name!r} would be read as a form of {clashes[0]!r}; '
                         f'choose another name')
    missing = [method for method in RULE_METHODS if not callable(getattr(rule_cls, method, None))]
    if missing:
        raise ValueError(f'{rule_cls.__name__} lacks {", ".join(missing)}: a pair rule needs '
                         f'{", ".join(RULE_METHODS)} (losses/forms.py)')
    parameters(rule_cls)  # every parameter must have a default
    RULES[name] = rule_cls
    return rule_cls


def names():
    return [prefix + rule for rule in RULES for prefix in FORMS]


def rule_of(name):
    """Where the rule of loss `name` is defined: 'losses.multi_similarity.MultiSimilarity'."""
    return _where(RULES[name])


def _where(rule_cls):
    # by name, not identity: importing the same --loss_module file again (the harness checks
    # its flags in-process) makes a new class object of the same rule
    return f'{rule_cls.__module__}.{rule_cls.__qualname__}'


def parameters(rule):
    """{parameter: default} of a rule, given by its name or its class."""
    rule_cls = RULES[rule] if isinstance(rule, str) else rule
    declared = {}
    for param in list(inspect.signature(rule_cls).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is param.empty:
            raise ValueError(f'{rule_cls.__name__}: parameter {param.name!r} needs a default')
        declared[param.name] = param.default
    return declared


def checked_parameters(name, params):
    """`params` of rule `name` converted to their defaults' types; InputError for an unknown
    parameter, or a value of the wrong type or out of the rule's range (losses/params.py)."""
    declared = parameters(name)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        accepted = ', '.join(f'{k} (default {v})' for k, v in declared.items()) or 'none'
        raise InputError(f'{name} has no parameter {", ".join(unknown)}; its parameters: '
                         f'{accepted}')
    return check_params(RULES[name], name, params, declared)


def has_official_weights(rule):
    rule_cls = RULES[rule] if isinstance(rule, str) else rule
    return callable(getattr(rule_cls, 'official_weighted_losses', None))


def resolve_pair_weights(rule_name, pair_weights='auto'):
    """'auto' -> 'official' where the official code has a weighted form (Con, MS), else
    'gradient'; 'official' for a rule without one is an InputError."""
    if pair_weights not in PAIR_WEIGHTS:
        raise InputError(f'--pair_weights {pair_weights!r} is unknown; choose one of '
                         f'{", ".join(PAIR_WEIGHTS)}')
    official = has_official_weights(rule_name)
    if pair_weights == 'auto':
        return 'official' if official else 'gradient'
    if pair_weights == 'official' and not official:
        with_official = [name for name in RULES if has_official_weights(name)]
        raise InputError(f'--pair_weights official: {rule_name} has no official weighted form '
                         f'(only {", ".join(with_official)} do); choose auto or gradient')
    return pair_weights


def split_name(name):
    """'WMS' -> ('W', 'MS'); 'SupCon' -> ('', 'SupCon'). InputError for an unknown name."""
    prefix, rule = ('', name) if name in RULES else (name[:1], name[1:])
    if prefix not in FORMS or rule not in RULES:
        raise InputError(f"--loss {name!r} is unknown; known: {', '.join(names())}")
    return prefix, rule


def create(name, pair_weights=None, **params):
    """The loss `name` (a rule name, or S/W/G + a rule name) with `params`."""
    prefix, rule_name = split_name(name)
    rule = RULES[rule_name](**checked_parameters(rule_name, params))
    if prefix == 'W':
        return Weighted(rule, resolve_pair_weights(rule_name, pair_weights or 'auto'))
    if pair_weights is not None:
        raise ValueError(f'pair_weights applies to the weighted form (W{rule_name}), not {name}')
    return FORMS[prefix](rule)


def forms_of(name, pair_weights='auto', **params):
    """Every form of loss `name` (Con, MS, ...) with the same parameters."""
    return LossForms(create(name, **params), create('S' + name, **params),
                     create('W' + name, pair_weights=pair_weights, **params),
                     create('G' + name, **params))


__all__ = ['create', 'forms_of', 'register', 'rule_of', 'names', 'parameters',
           'checked_parameters', 'has_official_weights',
           'resolve_pair_weights', 'pair_similarity_stats', 'LossForms', 'RULES', 'FORMS',
           'PAIR_WEIGHTS']
