"""Two-phase holds: capture and void at intake, and the hold-expiry job.

A capture, a void and an expiry are transactions of their own (types
``capture``, ``void``, ``expiry``) that name the hold in ``hold_id`` and run in
the hold's lane, after everything accepted before them: the same order,
attempt counting and sweeps as every other debit (TigerBeetle, "Two-phase
transfers": post and void are transfers that reference the pending one).
Whichever reaches the hold first while it is ``held`` ends it; the others fail
``hold_not_open``. So a hold resolves exactly once, whatever races.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import broker
from shared.ledger.errors import Conflict, ValidationFailed
from shared.ledger.money import parse_amount_field
from shared.ledger.states import TERMINAL_STATUSES, TransactionStatus, TransactionType
from shared.models import Transaction, Wallet
from shared.services.idempotency import fingerprint, insert_or_replay
from shared.services.transactions import transaction_not_found
from shared.services.wallets import wallet_not_found

#: A hold's lifetime when the request names none, and the longest allowed, in seconds.
HOLD_EXPIRES_IN_SECONDS_DEFAULT = 7 * 24 * 3600
HOLD_EXPIRES_IN_SECONDS_MAX = 30 * 24 * 3600


@dataclasses.dataclass(frozen=True, slots=True)
class HoldOperation:
    """A validated capture or void request.

    Attributes:
        type: ``capture`` or ``void``.
        hold_id: the hold to end.
        amount: a capture's amount as the client wrote it, a decimal string in
            the hold's currency (parsed here, where the currency is known, by
            ``shared.ledger.money.parse_amount``); None: all of it.
        destination_wallet_id: where a capture moves the money; None: the
            currency's system wallet.
    """

    type: TransactionType
    hold_id: uuid.UUID
    amount: str | None = None
    destination_wallet_id: uuid.UUID | None = None


def hold_not_open(detail: str) -> Conflict:
    """Return the ``hold_not_open`` error (409)."""
    return Conflict(detail, code="hold_not_open")


def submit_hold_operation(
    session: Session,
    operation: HoldOperation,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_id: str | None = None,
) -> tuple[Transaction, bool]:
    """Record a capture or void of a hold as a pending transaction; a drain is sent after commit.

    Args:
        request_id: the HTTP request's ``X-Request-Id``, stored with the row.

    Returns:
        ``(transaction, replayed)``: the capture or void transaction, as
        ``shared.services.intake.submit_transaction`` returns.

    Raises:
        NotFound: ``transaction_not_found`` (no such hold); ``wallet_not_found``
            (a capture's destination).
        Conflict: ``hold_not_open``: not a hold, or visibly not held any more
            (failed, captured, voided or expired). A hold still ``pending`` may be
            captured: the capture waits behind it in its lane.
        ValidationFailed: ``capture_exceeds_hold``, or a destination in another
            currency (``currency_mismatch``).
        InvalidAmount: the amount does not fit the hold's currency (422, ``amount``).
        IdempotencyKeyReused: the key was used with a different request.
    """
    hold = session.get(Transaction, operation.hold_id)
    if hold is None:
        raise transaction_not_found(operation.hold_id)
    if hold.type != TransactionType.HOLD:
        raise hold_not_open(f"transaction {hold.id} is a {hold.type}, not a hold")
    amount_minor = hold.amount_minor
    destination_id = None
    if operation.type is TransactionType.CAPTURE and operation.amount is not None:
        amount_minor = parse_amount_field(operation.amount, hold.currency)
    request_hash = fingerprint(
        [operation.type, operation.hold_id, amount_minor, operation.destination_wallet_id]
    )
    if operation.type is TransactionType.CAPTURE:
        if amount_minor > hold.amount_minor:
            raise ValidationFailed(
                f"capture of {amount_minor} minor units exceeds the hold's {hold.amount_minor}",
                code="capture_exceeds_hold",
                errors=[{"field": "amount", "message": "exceeds the held amount"}],
            )
        destination_id = _destination(session, operation.destination_wallet_id, hold.currency)
    inserted, replayed = insert_or_replay(
        session,
        dict(
            id=uuid.uuid4(),
            type=operation.type.value,
            hold_id=hold.id,
            amount_minor=amount_minor,
            currency=hold.currency,
            source_wallet_id=hold.source_wallet_id,
            destination_wallet_id=destination_id,
            lane_wallet_id=hold.lane_wallet_id,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            request_id=request_id,
        ),
    )
    if replayed:
        return inserted, True
    # Checked after the insert: a replay of an earlier capture answers as it is now,
    # even once the hold has ended. Raising rolls the insert back.
    if TransactionStatus(hold.status) in TERMINAL_STATUSES:
        raise hold_not_open(f"hold {hold.id} is {hold.status}, not held")
    return inserted, False


def _destination(session: Session, wallet_id: uuid.UUID | None, currency: str) -> uuid.UUID:
    """Return a capture's destination: the named wallet, checked, or the system wallet.

    Raises:
        NotFound: ``wallet_not_found``.
        ValidationFailed: ``currency_mismatch``.
    """
    if wallet_id is None:
        system_id = session.scalar(
            select(Wallet.id).where(Wallet.is_system, Wallet.currency == currency)
        )
        assert system_id is not None  # every currency with a hold has its system wallet
        return system_id
    wallet_currency = session.scalar(select(Wallet.currency).where(Wallet.id == wallet_id))
    if wallet_currency is None:
        raise wallet_not_found(wallet_id)
    if wallet_currency != currency:
        raise ValidationFailed(
            f"wallet {wallet_id} holds {wallet_currency}, not {currency}",
            code="currency_mismatch",
            errors=[
                {"field": "destination_wallet_id", "message": f"wallet holds {wallet_currency}"}
            ],
        )
    return wallet_id


#: One expiry per held hold past its ``expires_at``, in the hold's lane; the
#: idempotency key ``expiry <hold id>`` (under the hold's API key) makes a second
#: run, or a concurrent one, insert nothing. Its space is not a visible ASCII
#: character, so no client's ``Idempotency-Key`` (docs/api.md, "Transactions") can take it first.
_EXPIRE_SQL = text(
    """
INSERT INTO transactions (
    id, type, hold_id, amount_minor, currency, source_wallet_id, lane_wallet_id,
    api_key_id, idempotency_key, request_hash)
SELECT gen_random_uuid(), 'expiry', h.id, h.amount_minor, h.currency, h.source_wallet_id,
    h.lane_wallet_id, h.api_key_id, 'expiry ' || h.id::text, 'expiry'
FROM transactions h
WHERE h.type = 'hold' AND h.status = 'held' AND h.expires_at <= :now
ON CONFLICT ON CONSTRAINT transactions_idempotency_key DO NOTHING
RETURNING id
"""
)


def expire_holds(session: Session, *, now: dt.datetime | None = None) -> int:
    """Queue an expiry for every ``held`` hold past its ``expires_at``; return how many.

    The expiry runs in the hold's lane like a capture, so a capture accepted
    before it wins and the expiry fails ``hold_not_open``, and the other way
    round: the hold ends once. Safe to run twice or concurrently. A drain is
    sent after the commit if any expiry was queued.

    Args:
        now: the cut-off (default: the database's ``now()``).
    """
    queued = len(
        session.scalars(
            _EXPIRE_SQL, {"now": now if now is not None else session.scalar(select(func.now()))}
        ).all()
    )
    if queued:
        broker.send_after_commit(session, broker.DRAIN)
    return queued
