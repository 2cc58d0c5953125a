"""What a loss parameter may be: each rule states, beside its constructor's defaults, the range
of each parameter (`RANGES = {'temperature': POSITIVE, ...}`); the type is the default's (a
float default takes any real number, an int default whole numbers). `check(rule_cls, params)`
is called by `losses.create` before a rule is built, so a bad value is one InputError naming
the parameter, wherever it came from (--margin, --loss_param, a notebook)."""
import math
from typing import Callable, NamedTuple

from common.errors import InputError


class Range(NamedTuple):
    """A predicate on a number and how to say it in an error message."""
    holds: Callable[[float], bool]
    text: str


FINITE = Range(math.isfinite, 'a finite number')
POSITIVE = Range(lambda v: math.isfinite(v) and v > 0, 'a finite number above 0')
NONNEGATIVE = Range(lambda v: math.isfinite(v) and v >= 0, 'a finite number of at least 0')


def ranges_of(rule_cls):
    """{parameter: Range}: the rule's RANGES; a number without one must still be finite."""
    return dict(getattr(rule_cls, 'RANGES', {}))


def check(rule_cls, name, params, defaults):
    """The parameters converted to their default's type; InputError for a value of the wrong
    type or out of its range, naming the loss and the parameter."""
    ranges = ranges_of(rule_cls)
    checked = {}
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            checked[key] = value  # not a number: the rule's own business
            continue
        whole = isinstance(default, int)
        number = _as_number(value, int if whole else float)
        expected = ranges.get(key, FINITE)
        if number is None or not expected.holds(number):
            raise InputError(f'{name} parameter {key}={_shown(value)}: expected '
                             f'{expected.text}{" (a whole number)" if whole else ""}')
        checked[key] = number
    return checked


def _as_number(value, kind):
    """`value` as a float (or int), None when it is not one: a bool, a text, an int parameter
    given a fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _shown(value):
    return repr(value) if isinstance(value, str) else str(value)
