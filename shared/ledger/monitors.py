"""Balance monitors: the condition rule and its edge-triggered state, pure.

A monitor watches one wallet's ``balance`` or ``available_balance`` (``balance -
held``) against a threshold in minor units with ``lt``, ``lte``, ``gt`` or
``gte``. Its state is ``triggered`` while the condition holds and ``clear``
while it does not; it changes, and an event is recorded, only when the
condition changes (edge-triggered: docs/api-conventions.md, "Balance monitors").
The apply path evaluates the same rule in SQL (``shared.services.monitors``,
``condition_sql``), built from the tables here so the two cannot disagree.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from enum import StrEnum

from shared.ledger.errors import InvalidAmount
from shared.ledger.money import exponent_of, parse_amount


class MonitorField(StrEnum):
    """Which balance a monitor watches."""

    BALANCE = "balance"
    AVAILABLE_BALANCE = "available_balance"


class MonitorOperator(StrEnum):
    """How the watched balance is compared with the monitor's value."""

    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"


class MonitorState(StrEnum):
    """``triggered`` while the condition holds, ``clear`` while it does not."""

    CLEAR = "clear"
    TRIGGERED = "triggered"


#: Each operator as a Python comparison and as its SQL symbol (one table, two evaluators).
COMPARISONS: dict[MonitorOperator, tuple[Callable[[int, int], bool], str]] = {
    MonitorOperator.LT: (operator.lt, "<"),
    MonitorOperator.LTE: (operator.le, "<="),
    MonitorOperator.GT: (operator.gt, ">"),
    MonitorOperator.GTE: (operator.ge, ">="),
}

_ZERO_RE = re.compile(r"0(?:\.(0+))?", re.ASCII)


def watched_minor(field: MonitorField, balance_minor: int, held_minor: int) -> int:
    """Return the balance ``field`` names, in minor units (available = balance - held)."""
    if field is MonitorField.BALANCE:
        return balance_minor
    return balance_minor - held_minor


def condition_holds(
    field: MonitorField,
    op: MonitorOperator,
    value_minor: int,
    balance_minor: int,
    held_minor: int,
) -> bool:
    """Return whether ``watched balance <op> value`` holds (all amounts in minor units)."""
    compare, _ = COMPARISONS[op]
    return compare(watched_minor(field, balance_minor, held_minor), value_minor)


def next_state(state: MonitorState, holds: bool) -> MonitorState | None:
    """Return the state a monitor moves to when its condition is ``holds``, or None: no change.

    Edge-triggered: a ``clear`` monitor whose condition holds becomes
    ``triggered``, a ``triggered`` one whose condition no longer holds becomes
    ``clear``; otherwise nothing changes and no event is recorded.
    """
    wanted = MonitorState.TRIGGERED if holds else MonitorState.CLEAR
    return None if wanted is state else wanted


def parse_threshold(text: object, currency: str) -> int:
    """Parse a monitor's ``value`` into minor units: zero, or a signed amount.

    A threshold may be zero or negative (an available balance goes below zero
    under an overdraft limit), so it is ``"0"``, an amount as
    :func:`shared.ledger.money.parse_amount` accepts it, or ``-`` followed by one.
    ``parse_threshold("-5.00", "SGD") == -500``.

    Raises:
        InvalidAmount: not a string, not a plain decimal, more fractional digits
            than the currency's ISO 4217 exponent, or beyond 10^15 minor units.
        UnknownCurrency: ``currency`` is not ISO 4217.
    """
    if isinstance(text, str):
        zero = _ZERO_RE.fullmatch(text)
        if zero is not None:
            if len(zero.group(1) or "") > exponent_of(currency):
                raise InvalidAmount(f"{currency} has {exponent_of(currency)} fractional digit(s)")
            return 0
        if text.startswith("-"):
            return -parse_amount(text[1:], currency)
    return parse_amount(text, currency)
