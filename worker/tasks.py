"""Thin Celery tasks: each receives ids, calls one service function, and handles retry.

Arguments are ids only (JSON). Transient database failures are retried with
exponential backoff and jitter, at most ``TALLY_TASK_RETRIES_MAX`` times; past
that the message is dropped and the rows stay ``pending`` for the sweep, which
is always safe because draining is idempotent.
"""

from __future__ import annotations

import random

import structlog
from celery import Task, shared_task

import broker
from shared import db
from shared.config import get_settings
from shared.redis_client import get_redis
from shared.retry import backoff_seconds
from shared.services import holds, processor, sweeper
from shared.wakeups import publish_settled

_log = structlog.get_logger(__name__)

#: How long a drain waits before trying a shard another drain holds, in seconds.
#: Short: the holder is usually one batch from done, and the work is waiting.
_BUSY_COUNTDOWN_SECONDS = (0.05, 0.25)


def _clear_shard_signal(shard: int) -> None:
    """Delete the shard's "message queued" signal before reading it (see ``shard_signal_key``)."""
    try:
        get_redis().delete(processor.shard_signal_key(shard))
    except Exception:  # the signal expires by itself; the drain goes on
        _log.warning("shard_signal_not_cleared", shard=shard, exc_info=True)


@shared_task(bind=True, acks_late=True, ignore_result=True, name=processor.DRAIN_SHARD_TASK)
def drain_shard(self: Task, shard: int) -> None:
    """Apply the pending transactions of shard ``shard`` (an int)."""
    settings = get_settings()
    _clear_shard_signal(shard)
    try:
        report = processor.drain_shard(
            int(shard),
            batch_size=settings.batch_size,
            attempts_max=settings.apply_attempts_max,
            settled=publish_settled,
            signal=broker.signal_drains,
        )
    except db.LockBusy as error:
        # Another drain has the shard and will take what is pending now; this
        # message is for work committed since, which that drain may miss.
        raise self.retry(
            countdown=random.uniform(*_BUSY_COUNTDOWN_SECONDS), exc=error, max_retries=None
        ) from error
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
        _log.warning(
            "drain_retry", shard=shard, retry=retries + 1, countdown=countdown, error=str(error)
        )
        raise self.retry(countdown=countdown, exc=error, max_retries=None) from error
    if report.more:
        broker.publish_drain(shard)  # yield the worker; continue the shard in a new message


@shared_task(acks_late=True, ignore_result=True, name="tally.sweep_stalled_transactions")
def sweep_stalled_transactions() -> int:
    """Publish every shard with a transaction pending too long; return how many."""
    settings = get_settings()
    try:
        with db.transaction() as session:
            shards = sweeper.stalled_shards(session, age_seconds=settings.sweep_pending_age_seconds)
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("sweep_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the sweep again in a few seconds
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
