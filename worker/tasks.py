"""Thin Celery tasks: each receives ids, calls one service function, and handles retry.

Arguments are ids only (JSON). Transient database failures are retried with
exponential backoff and jitter, at most ``TALLY_TASK_RETRIES_MAX`` times; past
that the message is dropped and the rows stay ``pending`` for the sweep, which
is always safe because draining is idempotent.
"""

from __future__ import annotations

import structlog
from celery import Task, shared_task

import broker
from shared import db
from shared.config import get_settings
from shared.metrics import (
    DEPENDENCY_UP,
    DRAIN_RETRIES,
    PENDING_OLDEST_AGE,
    PENDING_TRANSACTIONS,
    SCHEDULED_RELEASED,
    STREAM_LOCKS_RELEASED,
)
from shared.retry import backoff_seconds
from shared.services import holds, overview, processor, scheduled, sweeper
from shared.wakeups import publish_settled

_log = structlog.get_logger(__name__)


def _clear_drain_signal() -> None:
    """Delete the stream's signal once its lock is held, before reading it (``broker``)."""
    try:
        broker.clear_drain_signal()
    except Exception:  # the signal expires by itself; the drain goes on
        _log.warning("drain_signal_not_cleared", exc_info=True)


def _take_drain_signal() -> bool:
    """Tell whether work was signalled since this drain last looked, and clear the signal."""
    try:
        return broker.take_drain_signal()
    except Exception:  # Redis is away: no message flows either; the sweep takes over
        _log.warning("drain_signal_unreadable", exc_info=True)
        return False


@shared_task(bind=True, name=broker.DRAIN_TASK)
def drain(self: Task) -> None:
    """Apply pending transactions in acceptance order while work comes; requeue if some is left.

    One message starts batches for up to ``TALLY_DRAIN_BUDGET_SECONDS`` (the
    batch under way when the budget runs out finishes), taking newly signalled
    work without a broker hop, then publishes a drain again if work is left, so
    maintenance tasks queued meanwhile get their turn.
    """
    settings = get_settings()
    try:
        report = processor.drain(
            batch_size=settings.batch_size,
            attempts_max=settings.apply_attempts_max,
            budget_seconds=settings.drain_budget_seconds,
            gather_seconds=settings.apply_gather_seconds,
            settled=publish_settled,
            locked=_clear_drain_signal,
            signalled=_take_drain_signal,
        )
        # Work signalled after this drain's last look found the lock held and
        # ended: publish again so that it is not left waiting.
        if report.more or _take_drain_signal():
            broker.publish_drain()
    except db.LockBusy:
        # The holder looks at the stream's signal after it lets the lock go, and
        # this drain has not cleared it: the work it announced is not lost.
        return
    except Exception as error:
        if not db.is_transient(error):
            raise
        retries = self.request.retries
        if retries >= settings.task_retries_max:
            _log.warning("drain_given_up_for_sweep", error=str(error))
            return
        countdown = backoff_seconds(
            retries,
            base_seconds=settings.retry_backoff_base_seconds,
            max_seconds=settings.retry_backoff_max_seconds,
        )
        DRAIN_RETRIES.inc()
        _log.warning("drain_retry", retry=retries + 1, countdown=countdown, error=str(error))
        raise self.retry(countdown=countdown, exc=error, max_retries=None) from error


@shared_task(name=broker.SWEEP_STALLED_TASK)
def sweep_stalled_transactions() -> int:
    """Publish a drain if a transaction has been pending too long; return 1 if published.

    First frees the stream if a stuck session holds its lock
    (:func:`shared.services.sweeper.release_stuck_stream_lock`). Also
    refreshes the ``tally_pending_transactions`` and
    ``tally_pending_oldest_age_seconds`` gauges, and ``tally_dependency_up`` for PostgreSQL.
    """
    settings = get_settings()
    try:
        with db.transaction() as session:
            freed = sweeper.release_stuck_stream_lock(
                session, idle_seconds=settings.stream_lock_idle_seconds
            )
            stalled = sweeper.stream_stalled(
                session, age_seconds=settings.sweep_pending_age_seconds
            )
            backlog = overview.pending_backlog(session)
    except Exception as error:
        if not db.is_transient(error):
            raise
        DEPENDENCY_UP.labels("postgresql").set(0)
        _log.warning("sweep_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the sweep again in a few seconds
    DEPENDENCY_UP.labels("postgresql").set(1)
    if freed is not None:
        STREAM_LOCKS_RELEASED.inc()
        _log.error(
            "stream_lock_released",
            pid=freed.pid,
            client=freed.client,
            idle_seconds=round(freed.idle_seconds, 1),
            detail="its holder sat idle with the lock held; its session was ended",
        )
    PENDING_TRANSACTIONS.set(backlog.count)
    PENDING_OLDEST_AGE.set(backlog.oldest_age_seconds)
    if not stalled:
        return 0
    try:
        broker.publish_drain()
    except Exception:
        _log.warning("sweep_publish_failed", exc_info=True)
        return 0
    _log.info("sweep", published=1)
    return 1


@shared_task(name=broker.EXPIRE_HOLDS_TASK)
def expire_holds() -> int:
    """Queue an expiry for every held hold past ``expires_at``; return how many.

    The service sends a drain after the commit; if it is lost, the expiries are
    pending rows and the sweep publishes them.
    """
    try:
        with db.transaction() as session:
            return holds.expire_holds(session)
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("hold_expiry_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the job again; the expiries are still due


@shared_task(name=broker.RELEASE_SCHEDULED_TASK)
def release_scheduled_transactions() -> int:
    """Release every due scheduled transaction to pending; return how many.

    One commit per batch of ``shared.services.scheduled.RELEASE_BATCH_MAX``,
    repeated while batches come back full; the service sends a drain after
    each commit, as intake does. Safe to run twice or concurrently.
    """
    released = 0
    while True:
        try:
            with db.transaction() as session:
                batch = scheduled.release_due(session)
        except Exception as error:
            if not db.is_transient(error):
                raise
            _log.warning("release_skipped_database_unavailable", error=str(error))
            return released  # beat runs the job again; the transactions are still due
        if not batch:
            return released
        released += len(batch)
        SCHEDULED_RELEASED.inc(len(batch))
        _log.info("scheduled_released", transactions=[str(i) for i in batch])
        if len(batch) < scheduled.RELEASE_BATCH_MAX:
            return released
