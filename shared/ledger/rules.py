"""Posting rules: a transaction and the wallets it touches -> entries, or a failure code.

Everything here is pure and works on plain values, so the rules are tested
without a database and the apply path (``shared.services.processor``) only
loads state, calls :func:`post`, and writes what it returns.

Amounts are integer minor units. A debit lowers a wallet's balance, a credit
raises it; every posting's signed entries sum to zero (docs/architecture.md, invariant 1).
A non-system wallet's available balance (balance - held) never goes below
minus its overdraft limit, zero unless ops set one (invariant 2).
"""

from __future__ import annotations

import dataclasses
import operator
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
        overdraft_limit_minor: how far below zero debits and holds may take the
            available balance, in minor units (0: not at all; a system wallet has no limit).
    """

    id: uuid.UUID
    currency: str
    balance_minor: int
    held_minor: int
    status: WalletStatus
    is_system: bool
    last_sequence: int
    overdraft_limit_minor: int = 0

    def copy(self) -> WalletState:
        """Return a copy to post on: 0.37 µs, where ``dataclasses.replace`` takes 1.86 µs.

        Every field is copied (:data:`_WALLET_FIELDS` lists them all), so a
        field added later cannot be left behind.
        """
        return WalletState(*_WALLET_FIELDS(self))

    @property
    def available_minor(self) -> int:
        """Return the balance not reserved by holds: balance - held (negative in overdraft)."""
        return self.balance_minor - self.held_minor

    @property
    def spendable_minor(self) -> int:
        """Return what new debits and holds may use: available balance + overdraft limit."""
        return self.available_minor + self.overdraft_limit_minor


#: Every field of :class:`WalletState`, in order: what :meth:`WalletState.copy` copies.
_WALLET_FIELDS = operator.attrgetter(*(field.name for field in dataclasses.fields(WalletState)))


def overdraft_used_minor(balance_minor: int, held_minor: int) -> int:
    """Return how much of its overdraft a wallet uses: how far its available balance is below 0.

    Args:
        balance_minor: the wallet's balance, in minor units.
        held_minor: the sum of its open holds, in minor units.

    Returns:
        ``max(0, held_minor - balance_minor)``, in minor units: the smallest
        overdraft limit the wallet may be given now (docs/architecture.md, invariant 2; a
        lower one is refused ``overdraft_in_use``, docs/api-conventions.md).
    """
    return max(0, held_minor - balance_minor)


@dataclasses.dataclass(frozen=True, slots=True)
class Leg:
    """One movement of money: ``amount_minor`` from ``source`` to ``destination``.

    ``currency`` is the leg's ISO 4217 code when it differs from the posting's
    (a group's legs may each have their own); None means the posting's.
    """

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount_minor: int
    currency: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Release:
    """Held funds a capture, void or expiry gives back on the hold's wallet.

    Attributes:
        wallet_id: the hold's wallet.
        amount_minor: the whole held amount, in minor units.
        hold_open: whether the hold is still ``held`` at this point of the batch;
            if not, the posting is rejected ``hold_not_open``.
    """

    wallet_id: uuid.UUID
    amount_minor: int
    hold_open: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Reversal:
    """The original transaction a reversal moves money back along, as the batch sees it.

    Attributes:
        original_amount_minor: the original's amount, in minor units.
        reversed_minor: what its completed reversals moved back so far (at this
            point of the batch), in minor units; a reversal that would take it
            past ``original_amount_minor`` is rejected ``reversal_exceeds_amount``.
    """

    original_amount_minor: int
    reversed_minor: int

    @property
    def left_minor(self) -> int:
        """Return what is left to reverse, in minor units."""
        return self.original_amount_minor - self.reversed_minor


@dataclasses.dataclass(frozen=True, slots=True)
class Posting:
    """What a transaction asks of the ledger, independent of storage.

    Attributes:
        type: the transaction type.
        currency: ISO 4217 code every wallet touched must hold (a leg may name its own).
        legs: the movements; one for deposit/withdrawal/transfer/capture, 2..50 for
            a group, none for a void or an expiry. For a hold, the single leg names
            the wallet to reserve on as its source.
        release: for a capture, void or expiry: the hold it ends.
        reversal: for a reversal: the original it moves money back along; its one
            leg runs from the original's destination to its source.
    """

    type: TransactionType
    currency: str
    legs: Sequence[Leg]
    release: Release | None = None
    reversal: Reversal | None = None


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
class HoldChange:
    """A change of a wallet's held amount the apply path must record (``hold_entries``).

    Attributes:
        wallet_id: the wallet.
        amount_minor: positive: reserved by a hold; negative: released.
        held_after_minor: the wallet's held amount after the change.
    """

    wallet_id: uuid.UUID
    amount_minor: int
    held_after_minor: int


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """The rules passed: write ``entries`` and record ``hold_changes``."""

    entries: tuple[Entry, ...]
    hold_changes: tuple[HoldChange, ...] = ()


def wallet_ids_of(posting: Posting) -> set[uuid.UUID]:
    """Return every wallet id the posting touches (to lock them, in sorted order)."""
    ids: set[uuid.UUID] = set()
    for leg in posting.legs:
        ids.add(leg.source_wallet_id)
        ids.add(leg.destination_wallet_id)
    if posting.release is not None:
        ids.add(posting.release.wallet_id)
    return ids


def _check_wallet(
    wallet_id: uuid.UUID, currency: str, wallets: Mapping[uuid.UUID, WalletState]
) -> Rejection | None:
    """Return why money may not move on ``wallet_id`` in ``currency``, or None."""
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
    return None


def _check_leg(
    leg: Leg, currency: str, wallets: Mapping[uuid.UUID, WalletState]
) -> Rejection | None:
    """Return why ``leg`` may not post against ``wallets`` as they stand, or None."""
    currency = leg.currency or currency
    for wallet_id in (leg.source_wallet_id, leg.destination_wallet_id):
        rejection = _check_wallet(wallet_id, currency, wallets)
        if rejection is not None:
            return rejection
    source = wallets[leg.source_wallet_id]
    # The available balance after the debit must stay >= -overdraft limit (invariant 2).
    if not source.is_system and source.spendable_minor < leg.amount_minor:
        limit = source.overdraft_limit_minor
        overdraft = f" (an overdraft limit of {limit} included)" if limit else ""
        return Rejection(
            FailureCode.INSUFFICIENT_FUNDS,
            f"wallet {source.id} has {source.spendable_minor} minor units available"
            f"{overdraft}, {leg.amount_minor} needed",
        )
    return None


def _check_release(
    release: Release, posting: Posting, wallets: Mapping[uuid.UUID, WalletState]
) -> Rejection | None:
    """Return why a capture, void or expiry may not end its hold, or None.

    A frozen wallet's hold may still be voided or expire (releasing never hurts
    the owner); a capture moves money, so the freeze stops it (via the leg check).
    """
    if not release.hold_open:
        return Rejection(FailureCode.HOLD_NOT_OPEN, "the hold is no longer held")
    wallet = wallets.get(release.wallet_id)
    if wallet is None:
        return Rejection(FailureCode.WALLET_NOT_FOUND, f"wallet {release.wallet_id} does not exist")
    for leg in posting.legs:
        if leg.amount_minor > release.amount_minor:
            return Rejection(
                FailureCode.CAPTURE_EXCEEDS_HOLD,
                f"capture of {leg.amount_minor} minor units exceeds the hold's "
                f"{release.amount_minor}",
            )
    return None


def _check_reversal(reversal: Reversal, posting: Posting) -> Rejection | None:
    """Return why a reversal may not move its amount back, or None.

    Completed reversals of one transaction never add up to more than its
    amount (docs/api-conventions.md, "Reversals"), whatever their number and order.
    """
    for leg in posting.legs:
        if leg.amount_minor > reversal.left_minor:
            return Rejection(
                FailureCode.REVERSAL_EXCEEDS_AMOUNT,
                f"reversal of {leg.amount_minor} minor units exceeds the "
                f"{reversal.left_minor} left to reverse of {reversal.original_amount_minor}",
            )
    return None


def post(posting: Posting, wallets: Mapping[uuid.UUID, WalletState]) -> Applied | Rejection:
    """Check ``posting`` against ``wallets`` and, if every rule passes, post it.

    On success the wallet states in ``wallets`` are updated in place (balance,
    held, last_sequence) so the next posting in the same batch sees them; on a
    rejection nothing is changed: a group posts all its legs or none.

    A hold raises its wallet's held amount (available balance drops, balance
    does not). A capture, void or expiry first releases its hold's whole held
    amount, then a capture moves the captured amount like a transfer: releasing
    first means the held funds pay for it (TigerBeetle, "Two-phase transfers").
    A reversal moves its amount like a transfer, unless it exceeds what is left
    to reverse of its original (``reversal_exceeds_amount``); the caller adds
    the amount of an applied reversal to ``Reversal.reversed_minor`` of the
    next posting of the same original.

    Args:
        posting: the transaction to post.
        wallets: the locked wallets, by id; must include every id of
            :func:`wallet_ids_of`, or the posting is rejected ``wallet_not_found``.

    Returns:
        ``Applied`` with the entries to write (debit before credit per leg,
        sequences gapless per wallet) and the held-amount changes, or
        ``Rejection`` with the failure code. A group's rejection message names
        the failing leg's index.
    """
    # Work on copies of just the touched wallets, so a rejection leaves no trace.
    scratch = {wid: wallets[wid].copy() for wid in wallet_ids_of(posting) if wid in wallets}
    entries: list[Entry] = []
    hold_changes: list[HoldChange] = []
    if posting.release is not None:
        rejection = _check_release(posting.release, posting, scratch)
        if rejection is not None:
            return rejection
        wallet = scratch[posting.release.wallet_id]
        wallet.held_minor -= posting.release.amount_minor
        hold_changes.append(HoldChange(wallet.id, -posting.release.amount_minor, wallet.held_minor))
    if posting.reversal is not None:
        rejection = _check_reversal(posting.reversal, posting)
        if rejection is not None:
            return rejection
    for index, leg in enumerate(posting.legs):
        rejection = _check_leg(leg, posting.currency, scratch)
        if rejection is not None:
            if posting.type is TransactionType.GROUP:
                return Rejection(rejection.code, f"leg {index}: {rejection.message}")
            return rejection
        if posting.type is TransactionType.HOLD:
            wallet = scratch[leg.source_wallet_id]
            wallet.held_minor += leg.amount_minor
            hold_changes.append(HoldChange(wallet.id, leg.amount_minor, wallet.held_minor))
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
    return Applied(tuple(entries), tuple(hold_changes))
