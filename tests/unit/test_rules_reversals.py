"""Posting rules of reversals: money moves back along the original, never more than its amount."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.errors import FailureCode
from shared.ledger.rules import Applied, Leg, Posting, Rejection, Reversal, WalletState, post
from shared.ledger.states import EntryDirection, TransactionType, WalletStatus


def wallet(balance_minor: int = 0, *, is_system: bool = False) -> WalletState:
    return WalletState(uuid.uuid4(), "SGD", balance_minor, 0, WalletStatus.ACTIVE, is_system, 0)


def reversal(
    debited: WalletState, credited: WalletState, amount_minor: int, original: Reversal
) -> Posting:
    """A reversal's posting as the apply path builds it: one leg, back along the original."""
    return Posting(
        TransactionType.REVERSAL,
        "SGD",
        (Leg(debited.id, credited.id, amount_minor),),
        reversal=original,
    )


def test_post_reversal_moves_the_amount_back_from_destination_to_source() -> None:
    a, b = wallet(0), wallet(1000)  # a transfer of 1000 from a to b has completed
    result = post(reversal(b, a, 400, Reversal(1000, 0)), {a.id: a, b.id: b})
    assert isinstance(result, Applied)
    debit, credit = result.entries
    assert (debit.wallet_id, debit.direction, debit.amount_minor) == (
        b.id, EntryDirection.DEBIT, 400,
    )  # fmt: skip
    assert (credit.wallet_id, credit.direction, credit.amount_minor) == (
        a.id, EntryDirection.CREDIT, 400,
    )  # fmt: skip
    assert (a.balance_minor, b.balance_minor) == (400, 600)


def test_post_reversal_may_take_exactly_what_is_left() -> None:
    a, b = wallet(0), wallet(1000)
    assert isinstance(post(reversal(b, a, 300, Reversal(1000, 700)), {a.id: a, b.id: b}), Applied)


def test_post_reversal_beyond_what_is_left_fails_and_changes_nothing() -> None:
    a, b = wallet(0), wallet(1000)
    result = post(reversal(b, a, 301, Reversal(1000, 700)), {a.id: a, b.id: b})
    assert isinstance(result, Rejection)
    assert result.code is FailureCode.REVERSAL_EXCEEDS_AMOUNT
    assert "301" in result.message and "300 left" in result.message
    assert (a.balance_minor, b.balance_minor, a.last_sequence, b.last_sequence) == (0, 1000, 0, 0)


def test_post_reversal_fails_insufficient_funds_like_any_debit() -> None:
    a, b = wallet(0), wallet(100)  # b spent most of what it received
    result = post(reversal(b, a, 400, Reversal(1000, 0)), {a.id: a, b.id: b})
    assert isinstance(result, Rejection) and result.code is FailureCode.INSUFFICIENT_FUNDS


def test_post_reversal_of_a_withdrawal_debits_the_system_wallet() -> None:
    system, a = wallet(-500, is_system=True), wallet(0)  # a withdrew 500
    result = post(reversal(system, a, 500, Reversal(500, 0)), {system.id: system, a.id: a})
    assert isinstance(result, Applied)
    assert (system.balance_minor, a.balance_minor) == (-1000, 500)


@given(
    original_minor=st.integers(1, 10_000),
    kind=st.sampled_from(["deposit", "withdrawal", "transfer"]),
    steps=st.lists(
        st.tuples(st.sampled_from(["reverse", "spend", "receive"]), st.integers(1, 12_000)),
        max_size=40,
    ),
)
def test_reversals_conserve_money_and_never_exceed_the_original(
    original_minor: int, kind: str, steps: list[tuple[str, int]]
) -> None:
    """Any sequence of reversals, mixed with payments in and out of the debited wallet.

    The apply path's bookkeeping is modelled as it is: an applied reversal adds
    its amount to what the next reversal of the original sees.
    """
    system, a, b = wallet(0, is_system=True), wallet(0), wallet(0)
    wallets = {w.id: w for w in (system, a, b)}
    # The original, already completed: money from its source to its destination.
    source, destination = {"deposit": (system, a), "withdrawal": (a, system),
                           "transfer": (a, b)}[kind]  # fmt: skip
    if not source.is_system:
        assert isinstance(post(_move(system, source, original_minor), wallets), Applied)
    assert isinstance(post(_move(source, destination, original_minor), wallets), Applied)
    outside = wallet(0, is_system=True)  # where the debited wallet spends and receives
    wallets[outside.id] = outside
    reversed_minor = 0
    for action, amount_minor in steps:
        if action == "spend":
            post(_move(destination, outside, amount_minor), wallets)
            continue
        if action == "receive":
            post(_move(outside, destination, amount_minor), wallets)
            continue
        available_before = destination.available_minor
        result = post(
            reversal(destination, source, amount_minor, Reversal(original_minor, reversed_minor)),
            wallets,
        )
        left_minor = original_minor - reversed_minor
        if isinstance(result, Applied):
            assert amount_minor <= left_minor
            assert sum(entry.signed_minor for entry in result.entries) == 0
            reversed_minor += amount_minor
        elif amount_minor > left_minor:
            assert result.code is FailureCode.REVERSAL_EXCEEDS_AMOUNT
        else:
            assert result.code is FailureCode.INSUFFICIENT_FUNDS
            assert not destination.is_system and available_before < amount_minor
        assert 0 <= reversed_minor <= original_minor
        assert sum(w.balance_minor for w in wallets.values()) == 0
        assert all(w.is_system or w.balance_minor >= 0 for w in wallets.values())


def _move(source: WalletState, destination: WalletState, amount_minor: int) -> Posting:
    return Posting(TransactionType.TRANSFER, "SGD", (Leg(source.id, destination.id, amount_minor),))
