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
    """What a transaction does to the ledger.

    ``capture``, ``void`` and ``expiry`` end a hold (named by ``hold_id``): they
    are transactions of their own, in the hold's lane, as TigerBeetle posts or
    voids a pending transfer with a transfer of its own. A ``reversal`` moves
    money back along a completed transaction it names in ``reverses_id``.
    """

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    HOLD = "hold"
    GROUP = "group"
    CAPTURE = "capture"
    VOID = "void"
    EXPIRY = "expiry"
    REVERSAL = "reversal"


#: The types a reversal may undo (docs/api-conventions.md, "Reversals"): those that move money
#: once and are then final. A hold moves none, a void or expiry only releases,
#: a group's legs are undone as a group, and a reversal is not itself reversed.
REVERSIBLE_TYPES = frozenset(
    {
        TransactionType.DEPOSIT,
        TransactionType.WITHDRAWAL,
        TransactionType.TRANSFER,
        TransactionType.CAPTURE,
    }
)


#: The operations that end a hold, and the status each leaves the hold in.
HOLD_OUTCOMES: dict[TransactionType, TransactionStatus] = {}


class TransactionStatus(StrEnum):
    """Where a transaction is in its life; see ``ALLOWED_TRANSITIONS``."""

    PENDING = "pending"
    HELD = "held"
    COMPLETED = "completed"
    FAILED = "failed"
    VOIDED = "voided"
    EXPIRED = "expired"


HOLD_OUTCOMES.update(
    {
        TransactionType.CAPTURE: TransactionStatus.COMPLETED,
        TransactionType.VOID: TransactionStatus.VOIDED,
        TransactionType.EXPIRY: TransactionStatus.EXPIRED,
    }
)


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
