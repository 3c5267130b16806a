"""The status machine's allowed transitions."""

from __future__ import annotations

import pytest

from shared.ledger.states import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    InvalidTransition,
    TransactionStatus,
    check_transition,
)

S = TransactionStatus


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.PENDING, S.COMPLETED), (S.PENDING, S.FAILED), (S.PENDING, S.HELD), (S.HELD, S.COMPLETED),
     (S.HELD, S.VOIDED), (S.HELD, S.EXPIRED), (S.FAILED, S.PENDING), (S.SCHEDULED, S.PENDING),
     (S.SCHEDULED, S.CANCELED)],
)  # fmt: skip
def test_check_transition_allows(current: S, new: S) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.COMPLETED, S.PENDING), (S.COMPLETED, S.FAILED), (S.VOIDED, S.PENDING),
     (S.EXPIRED, S.HELD), (S.PENDING, S.VOIDED), (S.FAILED, S.COMPLETED),
     (S.SCHEDULED, S.COMPLETED), (S.PENDING, S.CANCELED), (S.CANCELED, S.PENDING)],
)  # fmt: skip
def test_check_transition_rejects(current: S, new: S) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_terminal_statuses_have_no_way_out_but_retry() -> None:
    for status in TERMINAL_STATUSES:
        assert ALLOWED_TRANSITIONS[status] <= {S.PENDING}
