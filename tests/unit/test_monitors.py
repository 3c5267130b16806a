"""The balance monitor's rule: its condition, edge-triggered state and threshold parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.errors import InvalidAmount
from shared.ledger.money import format_amount
from shared.ledger.monitors import (
    MonitorField,
    MonitorOperator,
    MonitorState,
    condition_holds,
    next_state,
    parse_threshold,
)

amounts = st.integers(min_value=-(10**6), max_value=10**6)
wallet_states = st.tuples(amounts, st.integers(min_value=0, max_value=10**6))


@pytest.mark.parametrize(
    ("field", "op", "value", "balance", "held", "holds"),
    [("balance", "lt", 100, 99, 0, True), ("balance", "lt", 100, 100, 0, False),
     ("balance", "lte", 100, 100, 0, True), ("balance", "gt", 100, 100, 0, False),
     ("balance", "gte", 100, 100, 50, True), ("available_balance", "gte", 100, 100, 50, False),
     ("available_balance", "lt", 0, 10, 20, True), ("available_balance", "gt", -20, 10, 20, True)],
)  # fmt: skip
def test_condition_holds_compares_the_watched_balance(
    field: str, op: str, value: int, balance: int, held: int, holds: bool
) -> None:
    assert condition_holds(MonitorField(field), MonitorOperator(op), value, balance, held) is holds


@given(
    field=st.sampled_from(MonitorField),
    op=st.sampled_from(MonitorOperator),
    value=amounts,
    states=st.lists(wallet_states, max_size=40),
)
def test_events_only_where_the_condition_changes(
    field: MonitorField,
    op: MonitorOperator,
    value: int,
    states: list[tuple[int, int]],
) -> None:
    """Over any sequence of balances, a monitor (clear before its creation) changes state,
    and so records an event, exactly where its condition differs from the one before."""
    state, events = MonitorState.CLEAR, []
    conditions = [condition_holds(field, op, value, b, h) for b, h in states]
    for index, holds in enumerate(conditions):
        moved = next_state(state, holds)
        if moved is not None:
            assert moved is not state
            events.append((index, moved))
            state = moved
        assert (state is MonitorState.TRIGGERED) is holds
    expected = [
        (index, MonitorState.TRIGGERED if holds else MonitorState.CLEAR)
        for index, holds in enumerate(conditions)
        if holds != (conditions[index - 1] if index else False)
    ]
    assert events == expected
    # Triggered and cleared alternate, starting with triggered.
    assert [moved for _, moved in events] == [
        MonitorState.TRIGGERED if i % 2 == 0 else MonitorState.CLEAR for i in range(len(events))
    ]


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("0", "SGD", 0), ("0.00", "SGD", 0), ("0.0", "SGD", 0), ("100", "SGD", 10000),
     ("10.5", "SGD", 1050), ("-5.00", "SGD", -500), ("-100", "JPY", -100), ("0", "JPY", 0)],
)  # fmt: skip
def test_parse_threshold(text: str, currency: str, minor: int) -> None:
    assert parse_threshold(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency"),
    [("-0", "SGD"), ("0.000", "SGD"), ("0.0", "JPY"), ("10.505", "SGD"), ("+5", "SGD"),
     ("--5", "SGD"), ("- 5", "SGD"), ("1e3", "SGD"), ("00", "SGD"), (5, "SGD"), (None, "SGD")],
)  # fmt: skip
def test_parse_threshold_refuses(text: object, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_threshold(text, currency)


@given(minor=st.integers(min_value=-(10**15), max_value=10**15), currency=st.sampled_from(
    ["SGD", "JPY", "BHD"]))  # fmt: skip
def test_parse_threshold_reads_what_format_amount_writes(minor: int, currency: str) -> None:
    assert parse_threshold(format_amount(minor, currency), currency) == minor
