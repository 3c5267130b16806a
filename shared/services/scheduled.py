"""Scheduled transactions: recorded ``scheduled``, released to ``pending`` by beat, or canceled.

docs/api.md, "Scheduled transactions". A transaction submitted with a
``scheduled_at`` later than the database's ``now()`` is recorded
``scheduled``: nothing is checked or reserved against balances, and the
apply stream (``status = 'pending'``) does not see it. Beat's release job
(:func:`release_due`) makes each due one ``pending`` with a new
``lane_sequence``, so it joins the stream behind everything accepted before
its release (docs/architecture.md, invariant 6), as an ops retry does. One
statement releases a batch, its rows taken ``FOR UPDATE SKIP LOCKED`` and
guarded by ``status = 'scheduled'``: two releases at once take disjoint
rows, a repeated one finds nothing, and a release that dies rolls back, so
each transaction is released exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

import broker
from shared.ledger.errors import Conflict
from shared.ledger.states import TransactionStatus, check_transition
from shared.models import Transaction
from shared.services import transactions
from shared.services.events import record_transaction_events

#: The most transactions one release statement takes; the job repeats while batches are full.
RELEASE_BATCH_MAX = 1000

#: Due scheduled transactions, oldest ``scheduled_at`` first (index
#: ``transactions_scheduled_at``), each given a new ``lane_sequence`` in that
#: order: the inner ``LIMIT`` keeps the ordered subquery from being flattened,
#: so ``nextval`` runs on the rows in order.
_RELEASE_SQL = text(
    """
WITH due AS MATERIALIZED (
    SELECT id, scheduled_at, lane_sequence FROM transactions
    WHERE status = 'scheduled' AND scheduled_at <= now()
    ORDER BY scheduled_at, lane_sequence
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), numbered AS MATERIALIZED (
    SELECT id, nextval('transaction_lane_seq') AS lane_sequence
    FROM (SELECT id FROM due ORDER BY scheduled_at, lane_sequence LIMIT :limit) ordered
)
UPDATE transactions t
SET status = 'pending', lane_sequence = numbered.lane_sequence, updated_at = now()
FROM numbered
WHERE t.id = numbered.id AND t.status = 'scheduled'
RETURNING t.id
"""
)


def initial_state(
    session: Session, scheduled_at: dt.datetime | None
) -> tuple[str, dt.datetime | None]:
    """Return a new transaction's ``(status, scheduled_at)``: ``scheduled`` while the time is ahead.

    A time not after the database's ``now()`` (the clock :func:`release_due`
    reads) applies at once: ``pending`` with no ``scheduled_at``, recorded as
    usual (docs/api.md, "Scheduled transactions").
    """
    if scheduled_at is None or scheduled_at <= session.execute(select(func.now())).scalar_one():
        return TransactionStatus.PENDING.value, None
    return TransactionStatus.SCHEDULED.value, scheduled_at


def release_due(session: Session, *, limit: int = RELEASE_BATCH_MAX) -> Sequence[uuid.UUID]:
    """Move up to ``limit`` due ``scheduled`` transactions to ``pending``; return their ids.

    Each gets a new ``lane_sequence`` (the back of the apply stream), in
    ``scheduled_at`` order; a drain is sent once the caller commits. Safe to run
    twice or concurrently: rows another release holds are skipped, released
    rows are no longer ``scheduled``.
    """
    check_transition(TransactionStatus.SCHEDULED, TransactionStatus.PENDING)
    released = list(session.scalars(_RELEASE_SQL, {"limit": limit}))
    if released:
        broker.send_after_commit(session, broker.DRAIN)
    return released


def not_cancelable(detail: str) -> Conflict:
    """Return the ``not_cancelable`` error (409)."""
    return Conflict(detail, code="not_cancelable")


def cancel_transaction(session: Session, transaction_id: uuid.UUID) -> Transaction:
    """Cancel a ``scheduled`` transaction: it becomes ``canceled`` (terminal), nothing moved.

    The row is locked first, so a release running at the same time either
    skips it (and the cancel wins) or has released it (and the cancel
    refuses). Appends ``transaction.canceled`` in the same database transaction.

    Returns:
        The canceled transaction.

    Raises:
        NotFound: ``transaction_not_found``.
        Conflict: ``not_cancelable``: the transaction is not ``scheduled``.
    """
    transaction = session.get(
        Transaction, transaction_id, with_for_update={"key_share": True}, populate_existing=True
    )
    if transaction is None or transaction.status != TransactionStatus.SCHEDULED:
        status = transactions.get_transaction(
            session, transaction_id
        ).status  # NotFound when unknown
        raise not_cancelable(f"only a scheduled transaction can be canceled; this one is {status}")
    check_transition(TransactionStatus.SCHEDULED, TransactionStatus.CANCELED)
    session.execute(
        update(Transaction)
        .where(Transaction.id == transaction_id)
        .values(
            status=TransactionStatus.CANCELED.value,
            completed_at=func.now(),
            updated_at=func.now(),
        )
    )
    record_transaction_events(session, {transaction_id: TransactionStatus.CANCELED.value})
    return transactions.get_transaction(session, transaction_id)
