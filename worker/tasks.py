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
    SHARD_LOCKS_RELEASED,
)
from shared.redis_client import get_redis
from shared.retry import backoff_seconds
from shared.services import holds, overview, processor, sweeper
from shared.wakeups import publish_settled

_log = structlog.get_logger(__name__)


def _clear_shard_signal(shard: int) -> None:
    """Delete the shard's signal once its lock is held, before reading it (``shard_signal_key``)."""
    try:
        get_redis().delete(processor.shard_signal_key(shard))
    except Exception:  # the signal expires by itself; the drain goes on
        _log.warning("shard_signal_not_cleared", shard=shard, exc_info=True)


def _shard_signalled(shard: int) -> bool:
    """Tell whether work was signalled for the shard since this drain cleared its signal."""
    try:
        return bool(get_redis().exists(processor.shard_signal_key(shard)))
    except Exception:  # Redis is away: no message flows either; the sweep takes over
        _log.warning("shard_signal_unreadable", shard=shard, exc_info=True)
        return False


@shared_task(bind=True, acks_late=True, ignore_result=True, name=processor.DRAIN_SHARD_TASK)
def drain_shard(self: Task, shard: int) -> None:
    """Apply one batch of shard ``shard`` (an int); requeue the shard if it has more.

    One batch per message keeps the shards fair: a shard that keeps receiving
    work goes to the back of the queue after each batch instead of holding a
    worker process while the other shards' messages wait, and its work
    gathers into a larger batch meanwhile.
    """
    settings = get_settings()
    shard = int(shard)
    try:
        report = processor.drain_shard(
            shard,
            batch_size=settings.batch_size,
            attempts_max=settings.apply_attempts_max,
            batches_max=1,
            settled=publish_settled,
            signal=broker.signal_drains,
            locked=lambda: _clear_shard_signal(shard),
        )
        # Work signalled while this drain held the lock may have found it held
        # and ended: publish the shard again so that it is not left waiting.
        if report.more or _shard_signalled(shard):
            broker.publish_drain(shard)
    except db.LockBusy:
        # The holder looks at the shard's signal after it lets the lock go, and
        # this drain has not cleared it: the work it announced is not lost.
        return
    except Exception as error:
        if not db.is_transient(error):
            raise
        retries = self.request.retries
        if retries >= settings.task_retries_max:
            _log.warning("drain_given_up_for_sweep", shard=shard, error=str(error))
            return
        countdown = backoff_seconds(
            retries,
            base_seconds=settings.retry_backoff_base_seconds,
            max_seconds=settings.retry_backoff_max_seconds,
        )
        DRAIN_RETRIES.inc()
        _log.warning(
            "drain_retry", shard=shard, retry=retries + 1, countdown=countdown, error=str(error)
        )
        raise self.retry(countdown=countdown, exc=error, max_retries=None) from error


@shared_task(acks_late=True, ignore_result=True, name="tally.sweep_stalled_transactions")
def sweep_stalled_transactions() -> int:
    """Publish every shard with a transaction pending too long; return how many.

    First frees any shard whose lock a stuck session holds
    (:func:`shared.services.sweeper.release_stuck_shard_locks`). Also
    refreshes the ``tally_pending_transactions`` and
    ``tally_pending_oldest_age_seconds`` gauges, and ``tally_dependency_up`` for PostgreSQL.
    """
    settings = get_settings()
    try:
        with db.transaction() as session:
            freed = sweeper.release_stuck_shard_locks(
                session,
                shard_count=settings.shard_count,
                idle_seconds=settings.shard_lock_idle_seconds,
            )
            shards = sweeper.stalled_shards(session, age_seconds=settings.sweep_pending_age_seconds)
            backlog = overview.pending_backlog(session)
    except Exception as error:
        if not db.is_transient(error):
            raise
        DEPENDENCY_UP.labels("postgresql").set(0)
        _log.warning("sweep_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the sweep again in a few seconds
    DEPENDENCY_UP.labels("postgresql").set(1)
    for shard, holder in freed.items():
        SHARD_LOCKS_RELEASED.inc()
        _log.error(
            "shard_lock_released",
            shard=shard,
            pid=holder.pid,
            client=holder.client,
            idle_seconds=round(holder.idle_seconds, 1),
            detail="its holder sat idle with the lock held; its session was ended",
        )
    PENDING_TRANSACTIONS.set(backlog.count)
    PENDING_OLDEST_AGE.set(backlog.oldest_age_seconds)
    published = 0
    for shard in shards:
        try:
            broker.publish_drain(shard)
            published += 1
        except Exception:
            _log.warning("sweep_publish_failed", shard=shard, exc_info=True)
    if shards:
        _log.info("sweep", shards=len(shards), published=published)
    return published


@shared_task(acks_late=True, ignore_result=True, name="tally.expire_holds")
def expire_holds() -> int:
    """Queue an expiry in the lane of every held hold past ``expires_at``; return how many shards."""
    try:
        with db.transaction() as session:
            shards = holds.expire_holds(session)
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("hold_expiry_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the job again; the expiries are still due
    if shards:
        try:
            broker.signal_drains(shards)
        except Exception:  # the expiries are pending rows: the sweep publishes them
            _log.warning("hold_expiry_publish_failed", shards=shards, exc_info=True)
    return len(shards)
