"""Bulk ops retry: every ``failed`` transaction a filter selects, back to ``pending`` at once.

``POST /v1/transactions/retry`` and ``tally retry --failed`` both come here.
Each selected transaction goes through ``transactions.reopen``, the rule of a
single retry, in its original acceptance order (``lane_sequence``), so that
retried debits of one wallet keep their relative order. One drain is sent
after the commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from shared.ledger.states import TransactionStatus
from shared.models import Transaction
from shared.services import audit
from shared.services.transactions import reopen

#: The most transactions one bulk retry moves; a larger backlog takes several calls.
BULK_RETRY_LIMIT_MAX = 10_000


@dataclass(frozen=True)
class RetryFilter:
    """Which ``failed`` transactions a bulk retry selects; every given field must match.

    Attributes:
        failure_code: only this ``failure_code`` (``insufficient_funds``, ...).
        since: only those that failed at or after this time (``completed_at``, time zone aware).
        wallet_id: only those whose source or destination is this wallet, a group's legs included.
        limit: at most this many, oldest accepted first (1..``BULK_RETRY_LIMIT_MAX``).
    """

    failure_code: str | None = None
    since: dt.datetime | None = None
    wallet_id: uuid.UUID | None = None
    limit: int = 1000

    def as_details(self) -> dict[str, Any]:
        """Return the filter as JSON-serialisable audit details (unset fields left out)."""
        details: dict[str, Any] = {"limit": self.limit}
        if self.failure_code is not None:
            details["failure_code"] = self.failure_code
        if self.since is not None:
            details["since"] = self.since.isoformat()
        if self.wallet_id is not None:
            details["wallet_id"] = str(self.wallet_id)
        return details


def touches_wallet(wallet_id: uuid.UUID) -> ColumnElement[bool]:
    """Return the SQL condition "the transaction's source or destination is ``wallet_id``".

    A group names its wallets in its legs only; the GIN index serves ``@>``.
    """
    return or_(
        Transaction.source_wallet_id == wallet_id,
        Transaction.destination_wallet_id == wallet_id,
        Transaction.legs.contains([{"source_wallet_id": str(wallet_id)}]),
        Transaction.legs.contains([{"destination_wallet_id": str(wallet_id)}]),
    )


def select_failed(session: Session, selection: RetryFilter) -> list[uuid.UUID]:
    """Return the ids of the ``failed`` transactions ``selection`` matches, oldest accepted first.

    Reads only; a dry run is this call.
    """
    query = (
        select(Transaction.id)
        .where(Transaction.status == TransactionStatus.FAILED.value)
        .order_by(Transaction.lane_sequence)
        .limit(selection.limit)
    )
    if selection.failure_code is not None:
        query = query.where(Transaction.failure_code == selection.failure_code)
    if selection.since is not None:
        query = query.where(Transaction.completed_at >= selection.since)
    if selection.wallet_id is not None:
        query = query.where(touches_wallet(selection.wallet_id))
    return list(session.scalars(query))


def retry_selected(
    session: Session,
    transaction_ids: Sequence[uuid.UUID],
    *,
    actor: audit.Actor | None,
    details: dict[str, Any] | None = None,
) -> list[uuid.UUID]:
    """Move those of ``transaction_ids`` that are still ``failed`` back to ``pending``.

    Locks the rows (``FOR NO KEY UPDATE``, as a single retry does), reopens
    each with ``transactions.reopen`` in acceptance order (a drain is sent
    after the commit), and appends one ``transaction.bulk_retry`` audit
    event naming the ids actually retried.

    Args:
        transaction_ids: the selection, e.g. from :func:`select_failed` (the CLI
            shows its count and asks before calling this).
        actor: the operator; ``None`` records no audit event.
        details: what to record with the event (the filter).

    Returns:
        The ids moved to ``pending``, in the order they were reopened; a
        transaction that left ``failed`` meanwhile (another retry) is skipped.
    """
    if not transaction_ids:
        return []
    rows = session.scalars(
        select(Transaction)
        .where(
            Transaction.id.in_(list(transaction_ids)),
            Transaction.status == TransactionStatus.FAILED.value,
        )
        .order_by(Transaction.lane_sequence)
        .with_for_update(key_share=True)
    ).all()
    for transaction in rows:
        reopen(session, transaction)
    retried = [transaction.id for transaction in rows]
    if actor is not None:
        audit.record(
            session,
            actor,
            audit.AuditAction.TRANSACTION_BULK_RETRY,
            retried,
            {**(details or {}), "count": len(retried)},
        )
    return retried


def retry_failed(
    session: Session,
    selection: RetryFilter,
    *,
    dry_run: bool,
    actor: audit.Actor | None,
) -> list[uuid.UUID]:
    """Select the ``failed`` transactions ``selection`` matches and, unless ``dry_run``, retry them.

    Returns:
        The ids selected (``dry_run``: nothing changes, nothing is recorded) or retried.
    """
    selected = select_failed(session, selection)
    if dry_run:
        return selected
    return retry_selected(
        session,
        selected,
        actor=actor,
        details=selection.as_details(),
    )
