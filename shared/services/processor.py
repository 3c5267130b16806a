"""The apply path: drain a shard of pending transactions into the ledger.

Design (docs/architecture.md): every transaction has a *lane*, the wallet
whose debits it orders (its debited wallet; a deposit's destination), and
lanes are hashed into ``TALLY_SHARD_COUNT`` *shards*. A broker message means
"shard S has pending work". The one drain that holds S's lock takes the
oldest pending transactions of S in acceptance order (``lane_sequence``, one
sequence for all lanes, so the first N of a shard are a prefix of each of its
lanes), however many lanes they belong to, and applies them in one database
transaction. Work spread over many wallets is therefore batched as well as
work on one wallet. A duplicate or late message finds nothing to do, so
correctness never depends on the broker (design.md invariants 3, 4 and 6).

A drain holds the shard's session-level advisory lock (``shared.db.advisory_lock``)
from its first claim to its last apply. Each batch is two short database
transactions:

1. **claim**: pick the head of the shard and add one to each picked
   transaction's ``attempts``, committed on its own so that an attempt that
   dies (SIGKILL, lost connection) is still counted. A transaction whose
   earlier attempt did not finish is applied alone, so one poison transaction
   cannot take a batch down with it; past ``attempts_max`` it ends ``failed``
   with ``retries_exhausted`` (Celery's ``task_reject_on_worker_lost`` would
   otherwise redeliver it forever: Redis keeps no delivery count).
2. **apply**: lock the claimed rows that are still ``pending`` (a re-delivery
   finds none), lock every wallet they touch in sorted id order (two shards'
   drains that share a wallet cannot deadlock), run the posting rules in
   acceptance order, and write entries, balances and statuses together in one
   commit (invariant 4).

What follows a commit, the webhook deliveries' messages, the long-poll
wake-ups and the signals to other shards, runs after the lock is released:
the lock covers database work only, so a slow broker never holds a shard.

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
from typing import Any, cast

import structlog
from sqlalchemy import Connection, CursorResult, func, select, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.errors import FailureCode
from shared.ledger.states import TransactionStatus, TransactionType
from shared.metrics import (
    APPLY_BATCH_DURATION,
    APPLY_BATCH_SIZE,
    RETRIES_EXHAUSTED,
    SETTLE_DURATION,
    TRANSACTIONS_SETTLED,
    observe_many,
)
from shared.models import GroupLane, Transaction
from shared.services.apply import ApplyResult, apply_batch, release_group_lanes
from shared.services.events import record_transaction_events

#: The Celery task name that drains one shard (``worker.tasks``).
DRAIN_SHARD_TASK = "tally.drain_shard"

#: Called after each apply commit with the ids of the transactions it settled.
Settled = Callable[[Sequence[uuid.UUID]], None]

#: Called after a commit with other shards that have work again (a group's lanes).
Signal = Callable[[Sequence[int]], None]


def shard_of(lane_wallet_id: uuid.UUID, shard_count: int) -> int:
    """Return the shard (``0 .. shard_count - 1``) of a lane.

    A version 4 UUID's low bits are random, so lanes spread evenly over shards.
    """
    return lane_wallet_id.int % shard_count


def shard_lock_key(shard: int) -> str:
    """Return the advisory lock key (:func:`shared.db.advisory_lock`) a drain of ``shard`` holds."""
    return f"shard:{shard}"


def shard_signal_key(shard: int | str) -> str:
    """Return the Redis key that marks "this shard has work a drain has not read yet".

    Intake publishes a drain only when it can ``SET NX`` this key. A drain
    deletes it once it holds the shard's lock, *before* it reads the shard; a
    drain that finds the lock held leaves the key alone and ends, and the
    holder, once it has let the lock go, drains again if the key is set. So a
    transaction committed before a failed ``SET NX`` is read by a drain that
    has not yet deleted the key, and one committed later sets the key and
    publishes: no wake-up is lost, and no message waits for a busy shard. The
    key expires, so a lost message or a crashed holder only delays the shard
    until the sweep.
    """
    return f"tally:shard:{shard}"


_log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class DrainReport:
    """What one :func:`drain_shard` call did.

    Attributes:
        settled: transactions that left ``pending`` (completed, held or failed).
        failed: of those, how many failed a business rule or ran out of attempts.
        batches: apply transactions committed.
        more: True when it stopped at ``batches_max`` and its last claim left work
            behind (``Claim.rest``); work accepted since is announced by its signal.
    """

    settled: int = 0
    failed: int = 0
    batches: int = 0
    more: bool = False


def drain_shard(
    shard: int,
    *,
    batch_size: int,
    attempts_max: int,
    batches_max: int = 50,
    settled: Settled | None = None,
    signal: Signal | None = None,
    locked: Callable[[], None] | None = None,
) -> DrainReport:
    """Apply the pending transactions of one shard, oldest first, until none is left.

    Args:
        shard: the shard to drain (``0 .. TALLY_SHARD_COUNT - 1``).
        batch_size: transactions per apply database transaction.
        attempts_max: apply attempts before a transaction fails ``retries_exhausted``.
        batches_max: stop after this many batches (``more`` is then True) so one
            busy shard cannot hold a worker forever.
        settled: called with the ids each committed batch settled (long-poll wake-ups).
        signal: called with other shards to drain again: the lanes of a group
            that left ``pending``, where later debits waited for it.
        Both are after-commit callbacks of the batch (:func:`shared.db.after_commit`),
        so they run once the shard's lock is released
        (:func:`shared.db.advisory_lock`), also when a later batch raised. An
        exception either raises is logged, never propagated: the commit stands.
        locked: called once the shard's lock is held, before the first read of
            the shard (the worker clears the shard's signal there).

    Raises:
        shared.db.LockBusy: another drain holds this shard; try again shortly.
        sqlalchemy.exc.DBAPIError: a database error; :func:`shared.db.is_transient`
            tells whether re-running the drain may succeed. Nothing is half-applied.
    """
    report = DrainReport()
    announce = functools.partial(_announce, settled=settled, signal=signal)
    # One drain per shard at a time, across its claim and apply transactions: a
    # second drain (a duplicate message, the sweep) backs off instead of claiming
    # the same transactions between the first one's claim and apply.
    with db.advisory_lock(shard_lock_key(shard)) as connection:
        if locked is not None:
            locked()
        while report.batches < batches_max:
            if not _drain_batch(connection, shard, report, batch_size, attempts_max, announce):
                report.more = False
                break
    return report  # ``more`` is the last claim's ``rest``


def _announce(
    session: Session,
    settled_ids: Sequence[uuid.UUID],
    shards: Sequence[int],
    *,
    settled: Settled | None,
    signal: Signal | None,
) -> None:
    """Register ``settled`` and ``signal`` to run after the commit of ``session``'s transaction."""
    if settled is not None and settled_ids:
        db.after_commit(session, functools.partial(settled, tuple(settled_ids)))
    if signal is not None and shards:
        db.after_commit(session, functools.partial(signal, tuple(shards)))


def _drain_batch(
    connection: Connection,
    shard: int,
    report: DrainReport,
    batch_size: int,
    attempts_max: int,
    announce: Callable[[Session, Sequence[uuid.UUID], Sequence[int]], None],
) -> bool:
    """Claim and apply one batch of the shard; return False when nothing was claimable.

    ``announce(session, settled_ids, shards)`` registers, in the transaction
    that settles them, the drain's callbacks for what it settled.
    """
    with db.transaction(connection) as session:
        # The attempt count need not survive a crash of PostgreSQL itself (it
        # guards against a worker that dies, which this commit does survive), so
        # this commit does not wait for its WAL flush: one fsync less per batch.
        db.set_local(session, synchronous_commit="off")
        claimed = claim_batch(session, shard, batch_size=batch_size, attempts_max=attempts_max)
        if claimed is not None and claimed.exhausted:
            announce(session, claimed.ids, claimed.shards)
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
        announce(session, result.settled_ids, result.shards)
    _observe_batch(shard, result, time.perf_counter() - started)
    report.settled += sum(result.statuses.values())
    report.failed += result.statuses.get(TransactionStatus.FAILED, 0)
    report.batches += 1
    return True


def _observe_batch(shard: int, result: ApplyResult, duration_seconds: float) -> None:
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
        shard=shard,
        statuses=dict(result.statuses),
        duration_seconds=round(duration_seconds, 6),
        transactions={str(i): result.request_ids.get(i) for i in result.settled_ids},
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """The transactions picked for one apply; ``exhausted`` when the head was failed instead.

    ``shards`` lists other shards to signal once this claim's work commits: the
    lanes of an exhausted group, whose later debits no longer wait for it.
    ``type`` is the exhausted head's type (a metric label). ``rest`` is True
    when the shard may hold more claimable work than this claim took: a full
    batch, or one cut short before a suspect or a group that must wait.
    """

    ids: Sequence[uuid.UUID]
    exhausted: bool = False
    shards: Sequence[int] = ()
    type: str = ""
    rest: bool = True


#: The shard's pending transactions in acceptance order: its own (by their first
#: lane) and the groups that have another lane in it (``group_lanes``). UNION ALL
#: keeps both index scans ordered, so PostgreSQL merges them under the LIMIT; a
#: group with two lanes in the shard comes twice and is counted once.
_HEAD_SQL = text(
    """
SELECT id, attempts, type, lane_sequence FROM (
    SELECT t.id, t.attempts, t.type, t.lane_sequence FROM transactions t
    WHERE t.shard = :shard AND t.status = 'pending'
    UNION ALL
    SELECT t.id, t.attempts, t.type, t.lane_sequence
    FROM group_lanes g JOIN transactions t ON t.id = g.transaction_id
    WHERE g.shard = :shard AND t.status = 'pending'
) head ORDER BY lane_sequence LIMIT :limit
"""
)

#: Whether anything older than a group is still pending in any of its lanes,
#: leaving out what the batch being claimed applies before it.
_GROUP_BLOCKED_SQL = text(
    """
WITH lanes AS (
    SELECT lane_wallet_id FROM transactions WHERE id = :group_id
    UNION SELECT lane_wallet_id FROM group_lanes WHERE transaction_id = :group_id
)
SELECT EXISTS (
    SELECT 1 FROM transactions t
    WHERE t.status = 'pending' AND t.lane_sequence < :lane_sequence
      AND t.lane_wallet_id IN (SELECT lane_wallet_id FROM lanes)
      AND t.id <> ALL(CAST(:before AS uuid[]))
    UNION ALL
    SELECT 1 FROM group_lanes g JOIN transactions t ON t.id = g.transaction_id
    WHERE t.status = 'pending' AND t.lane_sequence < :lane_sequence
      AND g.lane_wallet_id IN (SELECT lane_wallet_id FROM lanes)
      AND t.id <> ALL(CAST(:before AS uuid[]))
)
"""
)


def claim_batch(
    session: Session, shard: int, *, batch_size: int, attempts_max: int
) -> Claim | None:
    """Pick the head of the shard for the next apply and count the attempt.

    The head is the shard's oldest ``batch_size`` pending transactions by
    ``lane_sequence``: for each lane of the shard, a prefix of its pending
    transactions, so lane order holds. A group is also in the lanes of the
    other wallets it debits, possibly in other shards: it is picked only when
    nothing older is pending in any of its lanes, and the batch stops before a
    group that must still wait (the drain that applies what it waits for, or
    the group itself, signals this shard again). The caller holds the shard's
    lock (:func:`drain_shard` does), so no other drain claims the same
    transactions; a group reachable from two shards is guarded by its status.

    Returns:
        None when the shard has nothing it may apply now; a ``Claim`` of the
        picked ids otherwise (just the head when an earlier attempt on it did
        not finish, and never past a transaction whose earlier attempt did not
        finish); a ``Claim`` with ``exhausted=True`` when the head had used up
        its attempts and was failed with ``retries_exhausted`` (logged at ERROR).
    """
    rows = session.execute(_HEAD_SQL, {"shard": shard, "limit": batch_size}).all()
    ids: list[uuid.UUID] = []
    for row in rows:
        if ids and row.id == ids[-1]:
            continue  # a group with two lanes in this shard
        if (
            row.type == TransactionType.GROUP
            and session.execute(
                _GROUP_BLOCKED_SQL,
                {"group_id": row.id, "lane_sequence": row.lane_sequence, "before": ids},
            ).scalar_one()
        ):
            break
        if not ids and row.attempts >= attempts_max:
            shards = _fail_exhausted(session, row.id, row.attempts)
            return Claim((row.id,), exhausted=True, shards=shards, type=row.type)
        if row.attempts > 0:
            # A suspect goes alone; everything after it in its lane must wait for
            # it, and cutting the whole batch there keeps that true without knowing lanes.
            if not ids:
                ids.append(row.id)
            break
        ids.append(row.id)
    else:  # every row was taken: the shard holds more only if the batch was full
        if not ids:
            return None
        rest = len(rows) >= batch_size
        _count_attempt(session, ids)
        return Claim(ids, rest=rest)
    if not ids:
        return None
    _count_attempt(session, ids)
    return Claim(ids)


def _count_attempt(session: Session, ids: Sequence[uuid.UUID]) -> None:
    """Add one to the ``attempts`` of the claimed transactions."""
    # Only ``attempts``, an unindexed column: PostgreSQL can then update the row
    # in place (a heap-only tuple, with the table's fillfactor leaving room) and
    # skip every index. ``updated_at`` changes when the status does.
    session.execute(
        update(Transaction).where(Transaction.id.in_(ids)).values(attempts=Transaction.attempts + 1)
    )


def _fail_exhausted(session: Session, transaction_id: uuid.UUID, attempts: int) -> list[int]:
    """Fail a transaction ``retries_exhausted``; return the shards of its other lanes."""
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
    return release_group_lanes(session, [transaction_id])


def reshard_pending(session: Session, *, shard_count: int) -> int:
    """Move every pending transaction (and held hold) to its lane's shard under ``shard_count``.

    Run by ``tally migrate`` so a changed ``TALLY_SHARD_COUNT`` leaves no
    transaction in a shard nobody drains. Change the count with the workers
    stopped: a lane split across two shards could be drained out of order.

    Returns:
        How many transactions moved.
    """
    lanes = session.execute(
        select(Transaction.lane_wallet_id, Transaction.shard)
        .where(Transaction.status.in_([TransactionStatus.PENDING, TransactionStatus.HELD]))
        .distinct()
    ).all()
    moved = 0
    for lane, shard in lanes:
        if shard != shard_of(lane, shard_count):
            result = session.execute(
                update(Transaction)
                .where(
                    Transaction.lane_wallet_id == lane,
                    Transaction.status.in_([TransactionStatus.PENDING, TransactionStatus.HELD]),
                )
                .values(shard=shard_of(lane, shard_count))
            )
            moved += cast(CursorResult[Any], result).rowcount
    for lane, shard in session.execute(select(GroupLane.lane_wallet_id, GroupLane.shard)).all():
        if shard != shard_of(lane, shard_count):
            session.execute(
                update(GroupLane)
                .where(GroupLane.lane_wallet_id == lane)
                .values(shard=shard_of(lane, shard_count))
            )
    return moved
