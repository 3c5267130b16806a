"""The apply path: one stream applies every pending transaction in acceptance order.

Design (docs/architecture.md, "The apply stream"): intake gives every
transaction a place in one global sequence (``lane_sequence``, from the
PostgreSQL sequence ``transaction_lane_seq``) as it records it, so the order
of that sequence is the order in which the API accepted them. One drain at a
time, whichever worker process holds the stream's advisory lock, takes the
oldest pending transactions of all wallets in that order and applies them as
one batch per database transaction. Every transaction is therefore applied
seeing the effect of every transaction accepted before it (invariant 6
in docs/architecture.md): money received is always applied before money
spent from it, and per-wallet order follows. A broker message means "there
is pending work"; a duplicate or late message finds nothing to do, so
correctness never depends on the broker (invariants 3 and 4).

A drain holds the stream's session-level advisory lock
(``shared.db.advisory_lock``) while it claims and applies. Each batch is two
short database transactions:

1. **claim**: pick the head of the stream and record it as the claim in
   flight (one ``apply_claims`` row), committed on its own so that an
   attempt that dies (SIGKILL, lost connection) is still counted: the next
   claim finds the row and counts one attempt of each of its transactions.
   A transaction whose earlier attempt did not finish is applied alone, so
   one poison transaction cannot take a batch down with it; past
   ``attempts_max`` it ends ``failed`` with ``retries_exhausted`` (Celery's
   ``task_reject_on_worker_lost`` would otherwise redeliver it forever: Redis
   keeps no delivery count).
2. **apply**: lock the claimed rows that are still ``pending`` (a re-delivery
   finds none), lock every wallet they touch in sorted id order, run the
   posting rules in acceptance order, and write entries, balances and
   statuses together in one commit (invariant 4).

A drain keeps applying while work keeps coming, starting no new batch once
``budget_seconds`` have passed, so a busy stream pays no broker hop per batch;
its batches grow with the backlog.

Row locks are ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: intake's foreign-key
checks take ``FOR KEY SHARE`` on the same wallet rows in column order, and
``FOR UPDATE`` would make the two deadlock (PostgreSQL docs, "Row-Level Locks").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import Connection, func, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.errors import FailureCode
from shared.ledger.states import TransactionStatus
from shared.metrics import (
    APPLY_BATCH_DURATION,
    APPLY_BATCH_SIZE,
    RETRIES_EXHAUSTED,
    SETTLE_DURATION,
    TRANSACTIONS_SETTLED,
    observe_many,
)
from shared.models import Transaction
from shared.services.apply import ApplyResult, apply_batch
from shared.services.events import record_transaction_events

#: The advisory lock (:func:`shared.db.advisory_lock`) that makes one drain the stream.
STREAM_LOCK_KEY = "apply-stream"

#: Called after each apply commit with the ids of the transactions it settled
#: and the highest ``lane_sequence`` settled so far (the stream's progress).
Settled = Callable[[Sequence[uuid.UUID], int], None]

_log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class DrainReport:
    """What one :func:`drain` call did.

    Attributes:
        settled: transactions that left ``pending``: completed, held or failed
            ("settled" in Tally means that, failures included; docs/architecture.md, "Glossary").
        failed: of those, how many failed a business rule or ran out of attempts.
        batches: apply transactions committed; a head failed ``retries_exhausted``
            in its claim transaction is not one.
        more: True when it stopped at ``budget_seconds`` or ``batches_max`` and
            its last claim may have left work (it took a full batch, or stopped
            before a transaction whose earlier attempt did not finish); False when
            it stopped because the stream was empty. Work accepted after its last
            look is announced by the stream's signal, not by ``more``.
    """

    settled: int = 0
    failed: int = 0
    batches: int = 0
    more: bool = False


def drain(
    *,
    batch_size: int,
    attempts_max: int,
    budget_seconds: float | None = None,
    batches_max: int | None = None,
    gather_seconds: float = 0.0,
    settled: Settled | None = None,
    locked: Callable[[], None] | None = None,
    signalled: Callable[[], bool] | None = None,
) -> DrainReport:
    """Apply pending transactions in acceptance order, a batch per database transaction.

    Claims and applies one batch after another. It stops when the stream is
    empty and ``signalled()`` (asked only while within the budget) says no
    new work was announced; or when the budget is spent or ``batches_max``
    batches were applied, then with ``more`` telling whether work may be left.
    The budget is looked at between batches only: the first batch always
    runs, and a batch started in time finishes, so a drain may overrun its
    budget by one batch. Without a budget or a batch limit it drains until
    the stream is empty.

    Args:
        batch_size: transactions per apply database transaction, at most.
        attempts_max: apply attempts before a transaction fails ``retries_exhausted``.
        budget_seconds: start no new batch once this many seconds have passed
            since the call (None: no limit).
        batches_max: stop after this many apply transactions (None: no limit);
            heads failed ``retries_exhausted`` do not count.
        gather_seconds: after a claim that emptied the stream (it took less
            than a full batch, or found nothing and new work was signalled),
            wait this long before the next claim, so that the next batch
            carries what arrived meanwhile: fewer, larger batches when work
            arrives at a steady pace, each transaction applied at most this much
            later. The first claim never waits. 0: claim again at once.
        settled: called with the ids each committed batch settled and the
            highest ``lane_sequence`` settled so far (long-poll wake-ups, the
            intake's backpressure): an after-commit callback (:func:`shared.db.after_commit`).
            It runs off the drain's thread (:func:`shared.db.advisory_lock`);
            an exception it raises is logged, never propagated: the commit stands.
        locked: called once the stream's lock is held, before the first read
            (the worker clears the stream's signal there).
        signalled: called when the stream looks empty; True if new work was
            announced since the last call (and the announcement is consumed),
            so the drain looks again without a broker hop.

    Raises:
        shared.db.LockBusy: another drain holds the stream; it will see the signal.
        sqlalchemy.exc.DBAPIError: a database error; :func:`shared.db.is_transient`
            tells whether re-running the drain may succeed. Nothing is half-applied.
    """
    report = DrainReport()
    announce = functools.partial(_announce, settled=settled)
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    with db.advisory_lock(STREAM_LOCK_KEY) as connection:
        if locked is not None:
            locked()
        looked = False
        while batches_max is None or report.batches < batches_max:
            if looked and not report.more and gather_seconds > 0:
                time.sleep(gather_seconds)
            looked = True
            if not _drain_batch(connection, report, batch_size, attempts_max, announce):
                report.more = False
                in_time = deadline is None or time.monotonic() < deadline
                if in_time and signalled is not None and signalled():
                    continue
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    return report


def _announce(
    session: Session,
    settled_ids: Sequence[uuid.UUID],
    applied_sequence: int,
    *,
    settled: Settled | None,
) -> None:
    """Register ``settled`` to run after the commit of ``session``'s transaction."""
    if settled is not None and settled_ids:
        db.after_commit(session, functools.partial(settled, tuple(settled_ids), applied_sequence))


def _drain_batch(
    connection: Connection,
    report: DrainReport,
    batch_size: int,
    attempts_max: int,
    announce: Callable[[Session, Sequence[uuid.UUID], int], None],
) -> bool:
    """Claim and apply one batch; return False when nothing was claimable.

    ``announce(session, settled_ids, applied_sequence)`` registers, in the transaction that
    settles them, the drain's callbacks for what it settled.
    """
    with db.transaction(connection) as session:
        # The attempt count need not survive a crash of PostgreSQL itself (it
        # guards against a worker that dies, which this commit does survive), so
        # this commit does not wait for its WAL flush: one fsync less per batch.
        db.set_local(session, synchronous_commit="off")
        claimed = claim_batch(session, batch_size=batch_size, attempts_max=attempts_max)
        if claimed is not None and claimed.exhausted:
            announce(session, claimed.ids, claimed.last_sequence)
    if claimed is None:
        return False
    report.more = claimed.rest
    if claimed.exhausted:  # counted only now that the failure is committed
        RETRIES_EXHAUSTED.inc()
        TRANSACTIONS_SETTLED.labels(
            claimed.type, TransactionStatus.FAILED.value, FailureCode.RETRIES_EXHAUSTED.value
        ).inc()
        report.settled += 1
        report.failed += 1
        return True
    started = time.perf_counter()
    with db.transaction(connection) as session:
        result = apply_batch(session, claimed.ids)
        announce(session, result.settled_ids, claimed.last_sequence)
    _observe_batch(result, time.perf_counter() - started)
    report.settled += sum(result.statuses.values())
    report.failed += result.statuses.get(TransactionStatus.FAILED, 0)
    report.batches += 1
    return True


def _observe_batch(result: ApplyResult, duration_seconds: float) -> None:
    """Count a committed batch in the metrics and log its transactions: once per batch, not per row.

    One INFO line per batch names every settled transaction with the request id
    it was submitted with (``transactions``: ``{id: request_id}``), so a
    request's id leads from the API's log lines to the worker's.
    """
    if not result.settled_ids:
        return  # a duplicate delivery: nothing was applied
    APPLY_BATCH_DURATION.observe(duration_seconds)
    APPLY_BATCH_SIZE.observe(len(result.settled_ids))
    for (type_, status, failure_code), count in result.outcomes.items():
        TRANSACTIONS_SETTLED.labels(type_, status, failure_code).inc(count)
    observe_many(SETTLE_DURATION, result.settle_seconds)
    if not _log.is_enabled_for(logging.INFO):
        return  # skip building the line's mapping at WARNING and above
    _log.info(
        "transactions_settled",
        statuses=dict(result.statuses),
        duration_seconds=round(duration_seconds, 6),
        transactions={str(i): result.request_ids.get(i) for i in result.settled_ids},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """The transactions picked for one apply; ``exhausted`` when the head was failed instead.

    ``type`` is the exhausted head's type (a metric label). ``rest`` is True
    when the stream may hold more claimable work than this claim took: a full
    batch, or one cut short before a suspect. ``last_sequence`` is the
    ``lane_sequence`` of the last claimed transaction: once the claim is
    settled, so is every transaction at or below it.
    """

    ids: Sequence[uuid.UUID]
    last_sequence: int
    exhausted: bool = False
    type: str = ""
    rest: bool = True


#: The stream's head: the oldest pending transactions in acceptance order
#: (index ``transactions_pending_sequence``), with the transactions of an
#: attempt that did not finish (``apply_claims``; None when the last one did).
_HEAD_SQL = text(
    """
SELECT id, lane_sequence, attempts, type,
    (SELECT transaction_ids FROM apply_claims WHERE stream = :stream) AS unfinished
FROM transactions WHERE status = 'pending' ORDER BY lane_sequence LIMIT :limit
"""
)

#: Record the claim in flight: the apply's commit deletes it (``shared.services.apply``).
_RECORD_CLAIM_SQL = text(
    """
INSERT INTO apply_claims (stream, transaction_ids) VALUES (:stream, CAST(:ids AS uuid[]))
ON CONFLICT (stream) DO UPDATE SET transaction_ids = excluded.transaction_ids, claimed_at = now()
"""
)


def claim_batch(session: Session, *, batch_size: int, attempts_max: int) -> Claim | None:
    """Pick the head of the stream for the next apply and record the claim.

    The head is the oldest ``batch_size`` pending transactions by
    ``lane_sequence``, cut before the first transaction whose earlier attempt
    did not finish: everything after a suspect must wait for it. The caller
    holds the stream's lock (:func:`drain` does), so no other drain claims the
    same transactions.

    Attempts are counted without a write per claimed transaction: the claim is
    one ``apply_claims`` row, which the apply deletes in its commit, and the
    apply adds the finished attempt to ``attempts`` in the status update it
    makes anyway. A row still there at the next claim is an attempt that
    died; this call then adds one to the ``attempts`` of its transactions
    that are still pending, before judging the head. So ``attempts`` counts
    every attempt that ended, finished or not; the one in flight is counted
    when it ends.

    Returns:
        None when nothing is pending; a ``Claim`` of the picked ids otherwise
        (just the head when an earlier attempt on it did not finish); a
        ``Claim`` with ``exhausted=True`` when the head had used up its
        attempts and was failed with ``retries_exhausted`` (logged at ERROR).
    """
    rows = session.execute(_HEAD_SQL, {"limit": batch_size, "stream": STREAM_LOCK_KEY}).all()
    if not rows:
        return None
    attempts = {row.id: row.attempts for row in rows}
    unfinished = rows[0].unfinished
    if unfinished:
        _count_attempt(session, unfinished)
        for transaction_id in set(unfinished) & attempts.keys():
            attempts[transaction_id] += 1
    head = rows[0]
    if attempts[head.id] >= attempts_max:
        _fail_exhausted(session, head.id, attempts[head.id])
        _record_claim(session, ())  # the unfinished attempt is counted: nothing is in flight
        return Claim((head.id,), head.lane_sequence, exhausted=True, type=head.type)
    if attempts[head.id] > 0:
        # A suspect goes alone, so that a transaction that kills its attempts
        # cannot take good ones down with it.
        taken = [head]
        rest = True
    else:
        taken = []
        for row in rows:
            if attempts[row.id] > 0:
                break
            taken.append(row)
        rest = len(taken) < len(rows) or len(rows) >= batch_size
    ids = [row.id for row in taken]
    _record_claim(session, ids)
    return Claim(ids, taken[-1].lane_sequence, rest=rest)


def _record_claim(session: Session, ids: Sequence[uuid.UUID]) -> None:
    """Record ``ids`` as the stream's claim in flight (``apply_claims``), replacing the last one."""
    session.execute(_RECORD_CLAIM_SQL, {"stream": STREAM_LOCK_KEY, "ids": list(ids)})


def _count_attempt(session: Session, ids: Sequence[uuid.UUID]) -> None:
    """Add one to the ``attempts`` of the transactions of an unfinished attempt still pending."""
    # No session synchronisation: the session holds none of these rows.
    session.execute(
        update(Transaction)
        .where(db.any_of(Transaction.id, ids), Transaction.status == TransactionStatus.PENDING)
        .values(attempts=Transaction.attempts + 1)
        .execution_options(synchronize_session=False)
    )


def _fail_exhausted(session: Session, transaction_id: uuid.UUID, attempts: int) -> None:
    """Fail a transaction ``retries_exhausted``, with its event, logged at ERROR."""
    session.execute(
        update(Transaction)
        .where(Transaction.id == transaction_id, Transaction.status == TransactionStatus.PENDING)
        .values(
            status=TransactionStatus.FAILED.value,
            failure_code=FailureCode.RETRIES_EXHAUSTED.value,
            failure_message=f"gave up after {attempts} apply attempts; an operator may retry it",
            completed_at=func.now(),
            updated_at=func.now(),
        )
    )
    record_transaction_events(session, {transaction_id: TransactionStatus.FAILED.value})
    _log.error("retries_exhausted", transaction_id=str(transaction_id), attempts=attempts)
