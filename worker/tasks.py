"""Thin Celery tasks: each receives ids, calls one service function, and handles retry.

Arguments are ids only (JSON). Transient database failures are retried with
exponential backoff and jitter, at most ``TALLY_TASK_RETRIES_MAX`` times; past
that the message is dropped and the rows stay ``pending`` for the sweep, which
is always safe because draining is idempotent.
"""

from __future__ import annotations

import uuid

import structlog
from celery import Task, shared_task
from kombu.exceptions import OperationalError as BrokerError

from shared import db
from shared.config import get_settings
from shared.redis_client import get_redis
from shared.retry import backoff_seconds
from shared.services import processor, sweeper

_log = structlog.get_logger(__name__)


def requeue_lane(lane_wallet_id: uuid.UUID | str) -> None:
    """Publish "this lane has pending work" (``tally.drain_wallet``), regardless of the lane signal.

    The sweep and a drain that yields use this: a stale signal must not stop them.
    """
    drain_wallet.apply_async((str(lane_wallet_id),), retry=False)


def _clear_lane_signal(wallet_id: str) -> None:
    """Delete the lane's "message queued" signal before reading the lane (see ``lane_signal_key``)."""
    try:
        get_redis().delete(processor.lane_signal_key(wallet_id))
    except Exception:  # the signal expires by itself; the drain goes on
        _log.warning("lane_signal_not_cleared", wallet_id=wallet_id, exc_info=True)


@shared_task(bind=True, acks_late=True, ignore_result=True, name=processor.DRAIN_WALLET_TASK)
def drain_wallet(self: Task, wallet_id: str) -> None:
    """Apply the pending transactions of the lane of ``wallet_id`` (a UUID string)."""
    settings = get_settings()
    _clear_lane_signal(wallet_id)
    try:
        report = processor.drain_lane(
            uuid.UUID(wallet_id),
            batch_size=settings.batch_size,
            attempts_max=settings.apply_attempts_max,
        )
    except Exception as error:
        if not db.is_transient(error):
            raise
        retries = self.request.retries
        if retries >= settings.task_retries_max:
            _log.warning("drain_given_up_for_sweep", wallet_id=wallet_id, error=str(error))
            return
        countdown = backoff_seconds(
            retries,
            base_seconds=settings.retry_backoff_base_seconds,
            max_seconds=settings.retry_backoff_max_seconds,
        )
        # A busy lane is routine (a duplicate message); anything else is worth a warning.
        log = _log.info if isinstance(error, db.LockBusy) else _log.warning
        log(
            "drain_retry",
            wallet_id=wallet_id,
            retry=retries + 1,
            countdown=countdown,
            error=str(error),
        )
        raise self.retry(countdown=countdown, exc=error, max_retries=None) from error
    if report.more:
        requeue_lane(wallet_id)  # yield the worker; continue the lane in a new message


@shared_task(acks_late=True, ignore_result=True, name="tally.sweep_stalled_transactions")
def sweep_stalled_transactions() -> int:
    """Publish every lane with a transaction pending too long; return how many."""
    settings = get_settings()
    try:
        with db.transaction() as session:
            lanes = sweeper.stalled_lanes(session, age_seconds=settings.sweep_pending_age_seconds)
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("sweep_skipped_database_unavailable", error=str(error))
        return 0  # beat runs the sweep again in a few seconds
    published = 0
    for lane_wallet_id in lanes:
        try:
            requeue_lane(lane_wallet_id)
            published += 1
        except BrokerError:
            _log.warning("sweep_publish_failed", wallet_id=str(lane_wallet_id), exc_info=True)
    if lanes:
        _log.info("sweep", lanes=len(lanes), published=published)
    return published
