"""Transaction reads, long-poll waits and the ops retry."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import func, inspect, or_, select, update
from sqlalchemy.orm import Session

import broker
from shared.ledger.errors import Conflict, NotFound
from shared.ledger.states import TransactionStatus, check_transition
from shared.models import HAS_METADATA, Transaction, TransactionArchive, lane_sequence
from shared.pagination import newest_first_page
from shared.services import audit


def transaction_not_found(transaction_id: uuid.UUID) -> NotFound:
    """Return the ``transaction_not_found`` error for ``transaction_id``."""
    return NotFound(f"transaction {transaction_id} does not exist", code="transaction_not_found")


def get_transaction(session: Session, transaction_id: uuid.UUID) -> Transaction:
    """Return the transaction ``transaction_id``, live or archived.

    An archived transaction (terminal, moved by the archive job) comes back as
    a transient ``Transaction`` with the same attributes, not attached to the session.

    Raises:
        NotFound: ``transaction_not_found``.
    """
    transaction = session.get(Transaction, transaction_id, populate_existing=True)
    if transaction is not None:
        return transaction
    archived = session.get(TransactionArchive, transaction_id, populate_existing=True)
    if archived is None:
        raise transaction_not_found(transaction_id)
    # A transient copy, never added to the session: readers see the same attributes.
    return Transaction(
        **{
            attribute.key: getattr(archived, attribute.key)
            for attribute in inspect(TransactionArchive).column_attrs
        }
    )


def list_transactions(
    session: Session,
    *,
    status: str | None,
    type_: str | None,
    wallet_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Sequence[Transaction], str | None]:
    """Return a page of transactions, newest first, filtered, and the next page's cursor.

    Args:
        status, type_: exact matches when given.
        wallet_id: transactions whose source or destination is this wallet, in
            a leg of a group too.
        metadata: only transactions whose metadata holds every one of these
            pairs exactly (``metadata @> '{...}'``, served by the partial GIN
            index ``transactions_metadata``; docs/benchmarks.md).
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.
    """
    query = select(Transaction)
    if status is not None:
        query = query.where(Transaction.status == status)
    if type_ is not None:
        query = query.where(Transaction.type == type_)
    if wallet_id is not None:
        # A group names its wallets in its legs only; the GIN index serves @>.
        query = query.where(
            or_(
                Transaction.source_wallet_id == wallet_id,
                Transaction.destination_wallet_id == wallet_id,
                Transaction.legs.contains([{"source_wallet_id": str(wallet_id)}]),
                Transaction.legs.contains([{"destination_wallet_id": str(wallet_id)}]),
            )
        )
    if metadata:
        # HAS_METADATA is implied by the pairs, and lets the partial index serve them.
        query = query.where(Transaction.metadata_.contains(dict(metadata)), HAS_METADATA)
    return newest_first_page(
        session,
        query,
        created_at=Transaction.created_at,
        id_=Transaction.id,
        limit=limit,
        cursor=cursor,
    )


def retry_transaction(
    session: Session,
    transaction_id: uuid.UUID,
    *,
    actor: audit.Actor | None = None,
) -> Transaction:
    """Move a ``failed`` transaction back to ``pending``; a drain is sent after commit.

    It gets a new place at the end of the stream (it is accepted anew), and
    its attempt count starts again from zero (:func:`reopen`).

    Args:
        actor: the operator; when given, ``transaction.retry`` is appended to
            the audit log in the same transaction.

    Raises:
        NotFound: ``transaction_not_found``.
        Conflict: ``not_retryable`` unless the transaction is ``failed``.
    """
    transaction = session.get(Transaction, transaction_id, with_for_update={"key_share": True})
    if transaction is None:
        raise transaction_not_found(transaction_id)
    if transaction.status != TransactionStatus.FAILED:
        raise Conflict(
            f"only a failed transaction can be retried; this one is {transaction.status}",
            code="not_retryable",
        )
    reopen(session, transaction)
    if actor is not None:
        audit.record(session, actor, audit.AuditAction.TRANSACTION_RETRY, [transaction_id])
    return get_transaction(session, transaction_id)


def reopen(session: Session, transaction: Transaction) -> None:
    """Put a locked ``failed`` transaction back in ``pending``; a drain is sent after commit.

    The one rule of every ops retry, single or bulk: the transaction is
    accepted anew (a new ``lane_sequence``, at the end of the stream;
    ``attempts`` from zero; no failure).

    Args:
        transaction: a row locked by the caller (``FOR NO KEY UPDATE``) whose status is ``failed``.
    """
    check_transition(TransactionStatus.FAILED, TransactionStatus.PENDING)
    session.execute(
        update(Transaction)
        .where(Transaction.id == transaction.id)
        .values(
            status=TransactionStatus.PENDING.value,
            failure_code=None,
            failure_message=None,
            completed_at=None,
            attempts=0,
            lane_sequence=lane_sequence.next_value(),
            updated_at=func.now(),
        )
    )
    broker.send_after_commit(session, broker.DRAIN)
