"""Posting rules: entries or a failure code, on plain values."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.errors import FailureCode
from shared.ledger.rules import (
    Applied,
    Leg,
    Posting,
    Rejection,
    Release,
    WalletState,
    overdraft_used_minor,
    post,
)
from shared.ledger.states import EntryDirection, TransactionType, WalletStatus


def wallet(balance_minor: int = 0, **kwargs: object) -> WalletState:
    fields: dict[str, object] = {
        "id": uuid.uuid4(), "currency": "SGD", "balance_minor": balance_minor, "held_minor": 0,
        "status": WalletStatus.ACTIVE, "is_system": False, "last_sequence": 0,
    }  # fmt: skip
    fields.update(kwargs)
    return WalletState(**fields)  # type: ignore[arg-type]


def transfer(source: WalletState, destination: WalletState, amount_minor: int) -> Posting:
    return Posting(TransactionType.TRANSFER, "SGD", (Leg(source.id, destination.id, amount_minor),))


def test_post_transfer_debits_source_and_credits_destination() -> None:
    a, b = wallet(1000, last_sequence=3), wallet(0)
    result = post(transfer(a, b, 400), {a.id: a, b.id: b})
    assert isinstance(result, Applied)
    debit, credit = result.entries
    assert (debit.wallet_id, debit.direction, debit.balance_after_minor, debit.sequence) == (
        a.id, EntryDirection.DEBIT, 600, 4,
    )  # fmt: skip
    assert (credit.wallet_id, credit.direction, credit.balance_after_minor, credit.sequence) == (
        b.id, EntryDirection.CREDIT, 400, 1,
    )  # fmt: skip
    assert (a.balance_minor, b.balance_minor, a.last_sequence) == (600, 400, 4)


def test_post_allows_spending_the_whole_available_balance() -> None:
    a, b = wallet(1000), wallet(0)
    assert isinstance(post(transfer(a, b, 1000), {a.id: a, b.id: b}), Applied)
    assert a.balance_minor == 0


@pytest.mark.parametrize(
    ("source", "destination", "code"),
    [
        (wallet(399), wallet(0), FailureCode.INSUFFICIENT_FUNDS),
        (wallet(1000, held_minor=700), wallet(0), FailureCode.INSUFFICIENT_FUNDS),
        (wallet(1000, status=WalletStatus.FROZEN), wallet(0), FailureCode.WALLET_FROZEN),
        (wallet(1000), wallet(0, status=WalletStatus.FROZEN), FailureCode.WALLET_FROZEN),
        (wallet(1000), wallet(0, currency="JPY"), FailureCode.CURRENCY_MISMATCH),
    ],
)
def test_post_rejects_and_changes_nothing(
    source: WalletState, destination: WalletState, code: FailureCode
) -> None:
    before = (source.balance_minor, destination.balance_minor, source.last_sequence)
    result = post(
        transfer(source, destination, 400), {source.id: source, destination.id: destination}
    )
    assert isinstance(result, Rejection) and result.code is code
    assert (source.balance_minor, destination.balance_minor, source.last_sequence) == before


def test_post_rejects_a_missing_wallet() -> None:
    a, b = wallet(1000), wallet(0)
    result = post(transfer(a, b, 1), {a.id: a})
    assert isinstance(result, Rejection) and result.code is FailureCode.WALLET_NOT_FOUND


def test_post_lets_a_system_wallet_go_negative() -> None:
    system, a = wallet(0, is_system=True), wallet(0)
    deposit = Posting(TransactionType.DEPOSIT, "SGD", (Leg(system.id, a.id, 500),))
    assert isinstance(post(deposit, {system.id: system, a.id: a}), Applied)
    assert (system.balance_minor, a.balance_minor) == (-500, 500)


def test_post_hold_reserves_available_balance_without_entries() -> None:
    a = wallet(1000)
    hold = Posting(TransactionType.HOLD, "SGD", (Leg(a.id, a.id, 300),))
    result = post(hold, {a.id: a})
    assert isinstance(result, Applied) and result.entries == ()
    assert (a.balance_minor, a.held_minor, a.available_minor) == (1000, 300, 700)


def test_post_group_is_all_or_nothing_and_names_the_failing_leg() -> None:
    a, b, c = wallet(1000), wallet(0), wallet(0)
    group = Posting(TransactionType.GROUP, "SGD", (Leg(a.id, b.id, 600), Leg(a.id, c.id, 600)))
    result = post(group, {a.id: a, b.id: b, c.id: c})
    assert isinstance(result, Rejection) and result.code is FailureCode.INSUFFICIENT_FUNDS
    assert result.message.startswith("leg 1:")
    assert (a.balance_minor, b.balance_minor, c.balance_minor) == (1000, 0, 0)


@given(
    balances=st.lists(st.integers(0, 10_000), min_size=2, max_size=5),
    moves=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 5_000)), max_size=40
    ),
)
def test_post_conserves_money_and_never_overdraws(
    balances: list[int], moves: list[tuple[int, int, int]]
) -> None:
    wallets = [wallet(b) for b in balances]
    states = {w.id: w for w in wallets}
    total = sum(balances)
    for s, d, amount in moves:
        source, destination = wallets[s % len(wallets)], wallets[d % len(wallets)]
        if source.id == destination.id:
            continue
        result = post(transfer(source, destination, amount), states)
        if isinstance(result, Applied):
            assert sum(e.signed_minor for e in result.entries) == 0
    assert sum(w.balance_minor for w in wallets) == total
    assert all(w.balance_minor >= 0 for w in wallets)


def test_post_lets_a_debit_use_the_overdraft_limit_and_no_more() -> None:
    a, b = wallet(1000, overdraft_limit_minor=5000), wallet(0)
    assert isinstance(post(transfer(a, b, 6000), {a.id: a, b.id: b}), Applied)
    assert (a.balance_minor, a.available_minor, a.spendable_minor) == (-5000, -5000, 0)
    result = post(transfer(a, b, 1), {a.id: a, b.id: b})
    assert isinstance(result, Rejection) and result.code is FailureCode.INSUFFICIENT_FUNDS
    assert "overdraft limit of 5000" in result.message
    assert a.balance_minor == -5000


def test_post_counts_holds_against_the_overdraft_limit() -> None:
    a, b = wallet(0, overdraft_limit_minor=1000), wallet(0)
    hold = Posting(TransactionType.HOLD, "SGD", (Leg(a.id, a.id, 800),))
    assert isinstance(post(hold, {a.id: a}), Applied)
    assert (a.balance_minor, a.available_minor) == (0, -800)
    result = post(transfer(a, b, 201), {a.id: a, b.id: b})
    assert isinstance(result, Rejection) and result.code is FailureCode.INSUFFICIENT_FUNDS
    assert isinstance(post(transfer(a, b, 200), {a.id: a, b.id: b}), Applied)
    assert a.available_minor == -1000


@pytest.mark.parametrize(
    ("balance_minor", "held_minor", "used_minor"),
    [(0, 0, 0), (500, 200, 0), (500, 500, 0), (100, 300, 200), (-400, 0, 400), (-400, 100, 500)],
)
def test_overdraft_used_is_how_far_available_is_below_zero(
    balance_minor: int, held_minor: int, used_minor: int
) -> None:
    assert overdraft_used_minor(balance_minor, held_minor) == used_minor


#: One step of a random history: (kind, source index, destination index, amount in minor units).
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["transfer", "withdrawal", "deposit", "hold", "capture", "void"]),
        st.integers(0, 4),
        st.integers(0, 4),
        st.integers(1, 5_000),
    ),
    max_size=60,
)


@given(
    balances=st.lists(st.integers(0, 10_000), min_size=2, max_size=5),
    limits=st.lists(st.integers(0, 10_000), min_size=5, max_size=5),
    steps=_STEPS,
)
def test_post_conserves_money_and_never_passes_the_overdraft_limit(
    balances: list[int], limits: list[int], steps: list[tuple[str, int, int, int]]
) -> None:
    """Any sequence of debits, holds, captures and voids: sums stay zero, no wallet below -limit."""
    system = wallet(-sum(balances), is_system=True)
    wallets = [wallet(b, overdraft_limit_minor=limits[i]) for i, b in enumerate(balances)]
    states = {w.id: w for w in [system, *wallets]}
    holds: list[tuple[WalletState, int]] = []  # open holds: (wallet, amount)
    for kind, s, d, amount in steps:
        source, destination = wallets[s % len(wallets)], wallets[d % len(wallets)]
        if kind in ("capture", "void"):
            if not holds:
                continue
            held_wallet, held_minor = holds[s % len(holds)]
            legs = (Leg(held_wallet.id, destination.id, min(amount, held_minor)),)
            posting = Posting(
                TransactionType(kind), "SGD", legs if kind == "capture" else (),
                Release(held_wallet.id, held_minor, hold_open=True),
            )  # fmt: skip
        else:
            leg = {
                "transfer": Leg(source.id, destination.id, amount),
                "withdrawal": Leg(source.id, system.id, amount),
                "deposit": Leg(system.id, destination.id, amount),
                "hold": Leg(source.id, source.id, amount),
            }[kind]
            posting = Posting(TransactionType(kind), "SGD", (leg,))
        result = post(posting, states)
        if isinstance(result, Applied):
            assert sum(e.signed_minor for e in result.entries) == 0
            if kind == "hold":
                holds.append((source, amount))
            elif kind in ("capture", "void"):
                holds.remove((held_wallet, held_minor))
        assert sum(w.balance_minor for w in states.values()) == 0
        assert all(w.available_minor >= -w.overdraft_limit_minor for w in wallets)
        assert all(w.balance_minor >= -w.overdraft_limit_minor for w in wallets)
        assert all(w.held_minor == sum(a for h, a in holds if h is w) for w in wallets)


def test_a_wallet_copy_has_every_field_and_is_its_own() -> None:
    original = WalletState(uuid.uuid4(), "JPY", -7, 3, WalletStatus.FROZEN, True, 9, 50)
    copy = original.copy()
    assert copy == original and copy is not original
    copy.balance_minor += 1
    assert original.balance_minor == -7
