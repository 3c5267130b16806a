"""Posting rules: a transaction and the wallets it touches -> entries, or a failure code.

Everything here is pure and works on plain values, so the rules are tested
without a database and the apply path (``shared.services.processor``) only
loads state, calls :func:`post`, and writes what it returns.

Amounts are integer minor units. A debit lowers a wallet's balance, a credit
raises it; every posting's signed entries sum to zero (design.md invariant 1).
A non-system wallet's available balance (balance - held) never goes below zero
(invariant 2).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence

from shared.ledger.errors import FailureCode
from shared.ledger.states import EntryDirection, TransactionType, WalletStatus


@dataclasses.dataclass(slots=True)
class WalletState:
    """A wallet as the rules see it; the apply path mutates it as it posts.

    Attributes:
        id: the wallet id.
        currency: ISO 4217 code.
        balance_minor: the balance in minor units (may be negative for a system wallet).
        held_minor: the sum of open holds in minor units.
        status: active or frozen.
        is_system: the currency's system wallet (no owner, may go negative).
        last_sequence: the ``sequence`` of the wallet's newest ledger entry (0: none).
    """

    id: uuid.UUID
    currency: str
    balance_minor: int
    held_minor: int
    status: WalletStatus
    is_system: bool
    last_sequence: int

    @property
    def available_minor(self) -> int:
        """Return the balance that new debits and holds may use: balance - held."""
        return self.balance_minor - self.held_minor


@dataclasses.dataclass(frozen=True, slots=True)
class Leg:
    """One movement of money: ``amount_minor`` from ``source`` to ``destination``."""

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount_minor: int


@dataclasses.dataclass(frozen=True, slots=True)
class Posting:
    """What a transaction asks of the ledger, independent of storage.

    Attributes:
        type: the transaction type.
        currency: ISO 4217 code every wallet touched must hold.
        legs: the movements; one for deposit/withdrawal/transfer, 2..50 for a group.
            For a hold, the single leg names the wallet to reserve on as its source.
    """

    type: TransactionType
    currency: str
    legs: Sequence[Leg]


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry the apply path must write (append-only)."""

    wallet_id: uuid.UUID
    direction: EntryDirection
    amount_minor: int
    balance_after_minor: int
    sequence: int

    @property
    def signed_minor(self) -> int:
        """Return the entry's effect on the balance: negative for a debit."""
        return -self.amount_minor if self.direction is EntryDirection.DEBIT else self.amount_minor


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A business rule failed: the transaction ends ``failed`` with ``code``."""

    code: FailureCode
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """The rules passed: write ``entries``; holds changed ``held_minor`` by ``held_delta_minor``."""

    entries: tuple[Entry, ...]
    held_delta_minor: Mapping[uuid.UUID, int]


def wallet_ids_of(posting: Posting) -> set[uuid.UUID]:
    """Return every wallet id the posting touches (to lock them, in sorted order)."""
    ids: set[uuid.UUID] = set()
    for leg in posting.legs:
        ids.add(leg.source_wallet_id)
        ids.add(leg.destination_wallet_id)
    return ids


def _check_leg(
    leg: Leg, currency: str, wallets: Mapping[uuid.UUID, WalletState]
) -> Rejection | None:
    """Return why ``leg`` may not post against ``wallets`` as they stand, or None."""
    for wallet_id in (leg.source_wallet_id, leg.destination_wallet_id):
        wallet = wallets.get(wallet_id)
        if wallet is None:
            return Rejection(FailureCode.WALLET_NOT_FOUND, f"wallet {wallet_id} does not exist")
        if wallet.currency != currency:
            return Rejection(
                FailureCode.CURRENCY_MISMATCH,
                f"wallet {wallet_id} holds {wallet.currency}, not {currency}",
            )
        if wallet.status is WalletStatus.FROZEN:
            return Rejection(FailureCode.WALLET_FROZEN, f"wallet {wallet_id} is frozen")
    source = wallets[leg.source_wallet_id]
    if not source.is_system and source.available_minor < leg.amount_minor:
        return Rejection(
            FailureCode.INSUFFICIENT_FUNDS,
            f"wallet {source.id} has {source.available_minor} minor units available, "
            f"{leg.amount_minor} needed",
        )
    return None


def post(posting: Posting, wallets: Mapping[uuid.UUID, WalletState]) -> Applied | Rejection:
    """Check ``posting`` against ``wallets`` and, if every rule passes, post it.

    On success the wallet states in ``wallets`` are updated in place (balance,
    held, last_sequence) so the next posting in the same batch sees them; on a
    rejection nothing is changed: a group posts all its legs or none.

    Args:
        posting: the transaction to post.
        wallets: the locked wallets, by id; must include every id of
            :func:`wallet_ids_of`, or the posting is rejected ``wallet_not_found``.

    Returns:
        ``Applied`` with the entries to write (debit before credit per leg,
        sequences gapless per wallet), or ``Rejection`` with the failure code.
        A group's rejection message names the failing leg's index.
    """
    # Work on copies of just the touched wallets, so a rejection leaves no trace.
    scratch = {
        wid: dataclasses.replace(wallets[wid]) for wid in wallet_ids_of(posting) if wid in wallets
    }
    entries: list[Entry] = []
    held_delta: dict[uuid.UUID, int] = {}
    for index, leg in enumerate(posting.legs):
        rejection = _check_leg(leg, posting.currency, scratch)
        if rejection is not None:
            if posting.type is TransactionType.GROUP:
                return Rejection(rejection.code, f"leg {index}: {rejection.message}")
            return rejection
        if posting.type is TransactionType.HOLD:
            scratch[leg.source_wallet_id].held_minor += leg.amount_minor
            held_delta[leg.source_wallet_id] = (
                held_delta.get(leg.source_wallet_id, 0) + leg.amount_minor
            )
            continue
        for wallet_id, direction in (
            (leg.source_wallet_id, EntryDirection.DEBIT),
            (leg.destination_wallet_id, EntryDirection.CREDIT),
        ):
            wallet = scratch[wallet_id]
            wallet.balance_minor += (
                -leg.amount_minor if direction is EntryDirection.DEBIT else leg.amount_minor
            )
            wallet.last_sequence += 1
            entries.append(
                Entry(
                    wallet_id,
                    direction,
                    leg.amount_minor,
                    wallet.balance_minor,
                    wallet.last_sequence,
                )
            )
    for wallet_id, state in scratch.items():
        original = wallets[wallet_id]
        original.balance_minor = state.balance_minor
        original.held_minor = state.held_minor
        original.last_sequence = state.last_sequence
    return Applied(tuple(entries), held_delta)
