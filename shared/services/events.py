"""The events outbox: every status change the contract names, appended in the same transaction.

docs/api.md, "Webhooks": ``transaction.completed``, ``.failed``, ``.held``,
``.voided``, ``.expired``, ``.reversed``, ``.canceled``, ``reconciliation.mismatch``
and ``.error``; the balance monitors' ``balance_monitor.triggered`` and ``.cleared``
come through :func:`record_events` (``shared.services.monitors``). Each
function here takes the session of the database transaction that makes the
change, so the change and its event commit together or not at all (a
transactional outbox). The same statement creates one delivery per enabled
endpoint subscribed to the event's type; the endpoints that got a due one are
sent, once each, after the commit (``broker.send_after_commit``), whichever
process commits; a send that fails is repaired by the delivery sweep.

An event keeps what changed (status, failure, attempts, times) and is
rendered with the rest of its transaction, which never changes, when it is
delivered or listed (:func:`render_events`), through the API's own rendering
(``shared.rendering``). Writing it costs the apply path one statement per
batch and no rendering. Event and delivery ids are UUIDv7 (RFC 9562,
PostgreSQL 18's ``uuidv7()``): time-ordered, so each insert appends to the
right edge of the primary key's index instead of dirtying a random leaf page
(docs/webhooks.md, "What the outbox costs the apply path").
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, delete, select, text
from sqlalchemy.orm import Session

import broker
from shared import db, rendering
from shared.metrics import EVENTS_RECORDED
from shared.models import (
    Event,
    ReconciliationRun,
    Transaction,
    TransactionArchive,
    WebhookDelivery,
)
from shared.pagination import newest_first_page
from shared.rendering import event_public_id as event_public_id

#: The columns of a transaction that an event keeps as they were at the change.
_SNAPSHOT = (
    "status",
    "failure_code",
    "failure_message",
    "attempts",
    "updated_at",
    "completed_at",
    "reversed_minor",
)

#: One delivery per enabled endpoint subscribed to each event the CTE ``ev`` inserted;
#: returns the endpoint of each. A delivery to an endpoint paused after failures is
#: due when the pause ends and returns NULL: nothing is published for it (the sweep
#: sends its probe), so a dead endpoint costs the publisher nothing (docs/webhooks.md).
_DELIVERIES_SQL = """
INSERT INTO webhook_deliveries (id, event_id, endpoint_id, next_attempt_at)
SELECT uuidv7(), ev.id, w.id, GREATEST(now(), w.paused_until)
FROM ev JOIN webhook_endpoints w
  ON w.status = 'enabled' AND w.event_types @> jsonb_build_array(ev.type)
RETURNING CASE WHEN next_attempt_at <= now() THEN endpoint_id END
"""

#: Events of the given transactions, as they are now, and their deliveries, in one
#: statement: the data-modifying CTE's rows feed the join with the endpoints.
_TRANSACTION_EVENTS_SQL = text(
    """
WITH ev AS (
    INSERT INTO events (id, type, transaction_id, api_key_id, status, failure_code,
                        failure_message, attempts, updated_at, completed_at, reversed_minor,
                        created_at)
    SELECT uuidv7(), 'transaction.' || t.status, t.id, t.api_key_id, t.status,
           t.failure_code, t.failure_message, t.attempts, t.updated_at, t.completed_at,
           t.reversed_minor, t.updated_at
    FROM transactions t WHERE t.id = ANY(CAST(:ids AS uuid[]))
    RETURNING id, type
)"""
    + _DELIVERIES_SQL
)

#: ``transaction.held`` of holds that a later transaction of the same batch ended:
#: the state they were in between, a microsecond before the event of their end.
_HELD_FIRST_SQL = text(
    """
WITH ev AS (
    INSERT INTO events (id, type, transaction_id, api_key_id, status, attempts, updated_at,
                        created_at)
    SELECT uuidv7(), 'transaction.held', t.id, t.api_key_id, 'held', t.attempts,
           t.updated_at, t.updated_at - interval '1 microsecond'
    FROM transactions t WHERE t.id = ANY(CAST(:ids AS uuid[]))
    RETURNING id, type
)"""
    + _DELIVERIES_SQL
)

#: ``transaction.reversed`` of originals, one per reversal completed, each with the
#: original's ``reversed_minor`` right after that reversal, in the batch's order.
_REVERSED_SQL = text(
    """
WITH ev AS (
    INSERT INTO events (id, type, transaction_id, api_key_id, status, attempts, updated_at,
                        completed_at, reversed_minor, created_at)
    SELECT uuidv7(), 'transaction.reversed', t.id, t.api_key_id, t.status, t.attempts,
           t.updated_at, t.completed_at, v.reversed_minor, t.updated_at
    FROM unnest(CAST(:ids AS uuid[]), CAST(:reversed AS bigint[])) WITH ORDINALITY
        AS v(id, reversed_minor, ordinal)
    JOIN transactions t ON t.id = v.id
    ORDER BY v.ordinal
    RETURNING id, type
)"""
    + _DELIVERIES_SQL
)

_RUN_EVENT_SQL = text(
    """
WITH ev AS (
    INSERT INTO events (id, type, reconciliation_run_id, status)
    VALUES (uuidv7(), :type, :run_id, :status)
    RETURNING id, type
)"""
    + _DELIVERIES_SQL
)


def record_transaction_events(
    session: Session,
    status_by_id: Mapping[uuid.UUID, str],
    *,
    held_first: Sequence[uuid.UUID] = (),
    reversed_: Sequence[tuple[uuid.UUID, int]] = (),
) -> None:
    """Append one event per transaction, of the status each has now, and its deliveries.

    Call it in the database transaction that set those statuses, after the
    update. One statement whatever the number of transactions (two when
    ``held_first`` is not empty).

    Args:
        status_by_id: the transactions that changed, and the status each reached
            (``completed``, ``failed``, ``held``, ``voided``, ``expired``,
            ``canceled``); the
            event's type is ``transaction.<status>``.
        held_first: holds among them that were held and then ended by another
            transaction of the same batch: each also gets its ``transaction.held``.
        reversed_: ``(original id, its reversed_minor after)`` for each reversal
            completed, in order: each gets a ``transaction.reversed`` of its original
            (which need not be among ``status_by_id``).
    """
    if not status_by_id:
        return
    deliveries = list(session.scalars(_TRANSACTION_EVENTS_SQL, {"ids": list(status_by_id)}))
    types = Counter(f"transaction.{s}" for s in status_by_id.values())
    if held_first:
        deliveries += session.scalars(_HELD_FIRST_SQL, {"ids": list(held_first)})
        types["transaction.held"] += len(held_first)
    if reversed_:
        ids, amounts = zip(*reversed_, strict=True)
        deliveries += session.scalars(_REVERSED_SQL, {"ids": list(ids), "reversed": list(amounts)})
        types["transaction.reversed"] += len(reversed_)
    _after_commit(session, types, deliveries)


def events_statement(events_cte: str) -> TextClause:
    """Return the statement that runs ``events_cte`` and creates its events' deliveries.

    ``events_cte`` is ``WITH ... ev AS (INSERT INTO events ... RETURNING id, type)``;
    the statement answers one row: the types of the events inserted and the
    endpoint of each delivery (None for a paused endpoint), for :func:`record_events`.
    """
    return text(
        events_cte
        + ", d(endpoint_id) AS ("
        + _DELIVERIES_SQL
        + ") SELECT ARRAY(SELECT type FROM ev), ARRAY(SELECT endpoint_id FROM d)"
    )


def record_events(session: Session, statement: TextClause, params: Mapping[str, Any]) -> list[str]:
    """Run a statement of :func:`events_statement`; return the types of the events it appended.

    One round trip. After the commit, the endpoints that got a due delivery
    are published, as for every event.
    """
    types, deliveries = session.execute(statement, params).one()
    if types:
        _after_commit(session, Counter(types), deliveries)
    return list(types)


def record_run_event(session: Session, run_id: uuid.UUID, status: str) -> None:
    """Append ``reconciliation.<status>`` for run ``run_id`` and its deliveries.

    Args:
        status: ``mismatch`` or ``error``, the status the run just reached.
    """
    deliveries = session.scalars(
        _RUN_EVENT_SQL, {"type": f"reconciliation.{status}", "run_id": run_id, "status": status}
    ).all()
    _after_commit(session, Counter({f"reconciliation.{status}": 1}), deliveries)


def _after_commit(
    session: Session, types: Counter[str], deliveries: Sequence[uuid.UUID | None]
) -> None:
    """Count the events once committed, and send each endpoint that got a due delivery.

    ``deliveries`` holds the endpoint of each delivery created, None for a paused one.
    """

    def committed() -> None:
        for type_, count in types.items():
            EVENTS_RECORDED.labels(type=type_).inc(count)

    db.after_commit(session, committed)
    due = tuple(sorted({endpoint for endpoint in deliveries if endpoint is not None}))
    if due:
        broker.send_after_commit(session, broker.Endpoints(due))


class _AsOf:
    """A transaction as an event saw it: the event's snapshot columns over the transaction's."""

    def __init__(self, transaction: Any, event: Event) -> None:
        self._transaction, self._event = transaction, event

    def __getattr__(self, name: str) -> Any:
        source = self._event if name in _SNAPSHOT else self._transaction
        return getattr(source, name)


def render_events(session: Session, events: Sequence[Event]) -> list[rendering.Event]:
    """Render events as the payload of docs/api.md, "Webhooks" (``shared.rendering.Event``): ``{"id", "type",
    "created_at", "data"}``.

    ``data`` is the Transaction object as it was at the event (live or
    archived), or the reconciliation run. Three reads at most, whatever the
    number of events.
    """
    transaction_ids = {
        e.transaction_id for e in events if e.transaction_id is not None and e.snapshot is None
    }
    transactions: dict[uuid.UUID, Any] = {}
    if transaction_ids:
        transactions = {
            t.id: t
            for t in session.scalars(
                select(Transaction).where(db.any_of(Transaction.id, transaction_ids))
            )
        }
        archived = transaction_ids - transactions.keys()
        if archived:
            transactions |= {
                t.id: t
                for t in session.scalars(
                    select(TransactionArchive).where(TransactionArchive.id.in_(archived))
                )
            }
    run_ids = {e.reconciliation_run_id for e in events if e.reconciliation_run_id is not None}
    runs = (
        {
            r.id: r
            for r in session.scalars(
                select(ReconciliationRun).where(ReconciliationRun.id.in_(run_ids))
            )
        }
        if run_ids
        else {}
    )
    rendered = []
    for event in events:
        data: Any = None
        if event.snapshot is None and event.transaction_id in transactions:
            data = rendering.Transaction.of(_AsOf(transactions[event.transaction_id], event))
        elif event.snapshot is not None:  # a balance monitor's: all it shows is kept
            data = rendering.BalanceMonitorEvent.of(rendering.monitor_event_view(event))
        elif event.reconciliation_run_id is not None and event.reconciliation_run_id in runs:
            data = rendering.ReconciliationRun.of(runs[event.reconciliation_run_id])
        rendered.append(rendering.Event.of(rendering.With(event, data=data)))
    return rendered


def list_events(
    session: Session,
    *,
    api_key_id: uuid.UUID | None,
    type_: str | None,
    transaction_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[rendering.Event], str | None]:
    """Return a page of rendered events, newest first, and the next page's cursor (or None).

    Args:
        api_key_id: only the events of transactions this key submitted (a
            service key's view); None for all events (an ops key's view).
        type_, transaction_id: exact matches when given.
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = select(Event)
    if api_key_id is not None:
        query = query.where(Event.api_key_id == api_key_id)
    if type_ is not None:
        query = query.where(Event.type == type_)
    if transaction_id is not None:
        query = query.where(Event.transaction_id == transaction_id)
    rows, next_cursor = newest_first_page(
        session, query, created_at=Event.created_at, id_=Event.id, limit=limit, cursor=cursor
    )
    return render_events(session, rows), next_cursor


#: Events past the retention with no delivery still pending, oldest first.
_EXPIRED_EVENTS_SQL = text(
    """
SELECT e.id FROM events e
WHERE e.created_at < :cutoff
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
ORDER BY e.created_at
LIMIT :chunk
"""
)


def prune_events(*, cutoff: dt.datetime, chunk_size: int) -> int:
    """Delete the events created before ``cutoff``, with their ended deliveries; return how many.

    An event with a delivery still ``pending`` is kept until that delivery
    ends (the retry window is far shorter than any retention). Each chunk of
    ``chunk_size`` events is its own short transaction, so the apply path never
    waits behind a long delete; running it twice, or on two beats at once, is
    harmless. Stripe keeps events for 30 days; ``TALLY_EVENT_RETENTION_DAYS``
    sets it here (docs/webhooks.md, "Retention").

    Args:
        cutoff: an aware datetime; events strictly older go.
        chunk_size: events per transaction (at least 1).
    """
    pruned = 0
    while True:
        with db.transaction() as session:
            ids = list(
                session.scalars(_EXPIRED_EVENTS_SQL, {"cutoff": cutoff, "chunk": chunk_size})
            )
            if ids:
                session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
                session.execute(delete(Event).where(Event.id.in_(ids)))
        pruned += len(ids)
        if len(ids) < chunk_size:
            return pruned
