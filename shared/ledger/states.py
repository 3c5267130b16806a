"""The transaction status machine and its allowed transitions.

``pending`` -> ``completed`` | ``failed`` | ``held``; a ``held`` hold ->
``completed`` (captured) | ``voided`` | ``expired``; an ops retry moves
``failed`` back to ``pending``. TigerBeetle's two-phase transfers
(pending -> post / void / expire) are the model for holds.
"""

from __future__ import annotations

from enum import StrEnum

from shared.ledger.errors import TallyError


class TransactionType(StrEnum):
    """What a transaction does to the ledger."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    HOLD = "hold"
    GROUP = "group"


class TransactionStatus(StrEnum):
    """Where a transaction is in its life; see ``ALLOWED_TRANSITIONS``."""

    PENDING = "pending"
    HELD = "held"
    COMPLETED = "completed"
    FAILED = "failed"
    VOIDED = "voided"
    EXPIRED = "expired"


class WalletStatus(StrEnum):
    """Whether a wallet accepts new debits and credits."""

    ACTIVE = "active"
    FROZEN = "frozen"


class EntryDirection(StrEnum):
    """The side of a ledger entry, from the wallet's point of view.

    A debit lowers the wallet's balance, a credit raises it.
    """

    DEBIT = "debit"
    CREDIT = "credit"


#: Statuses a transaction never leaves on its own (only an ops retry reopens ``failed``).
TERMINAL_STATUSES = frozenset(
    {
        TransactionStatus.COMPLETED,
        TransactionStatus.FAILED,
        TransactionStatus.VOIDED,
        TransactionStatus.EXPIRED,
    }
)

ALLOWED_TRANSITIONS: dict[TransactionStatus, frozenset[TransactionStatus]] = {
    TransactionStatus.PENDING: frozenset(
        {TransactionStatus.COMPLETED, TransactionStatus.FAILED, TransactionStatus.HELD}
    ),
    TransactionStatus.HELD: frozenset(
        {TransactionStatus.COMPLETED, TransactionStatus.VOIDED, TransactionStatus.EXPIRED}
    ),
    TransactionStatus.FAILED: frozenset({TransactionStatus.PENDING}),
    TransactionStatus.COMPLETED: frozenset(),
    TransactionStatus.VOIDED: frozenset(),
    TransactionStatus.EXPIRED: frozenset(),
}


class InvalidTransition(TallyError):
    """A status change the machine does not allow (a programming error, or a stale read)."""

    code = "invalid_transition"


def check_transition(current: TransactionStatus, new: TransactionStatus) -> None:
    """Raise unless ``current -> new`` is an allowed transition.

    Raises:
        InvalidTransition: the transition is not in ``ALLOWED_TRANSITIONS``.
    """
    if new not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"a {current} transaction cannot become {new}")
