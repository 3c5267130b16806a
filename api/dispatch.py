"""Publishing to the broker from the API: a Celery producer that knows task names, not tasks.

The API never imports the worker's tasks: it sends by name
(``Celery.send_task``). Publishing happens only after the database commit (see
``shared.db.after_commit``) and does not retry for long: if Redis is down the
request still answers 202 and the sweep publishes the lane later
(design.md, "Known pitfalls").
"""

from __future__ import annotations

import functools
import uuid

from celery import Celery

from shared.config import get_settings
from shared.metrics import PUBLISH_FAILURES
from shared.redis_client import get_redis
from shared.services.processor import DRAIN_WALLET_TASK, lane_signal_key


@functools.cache
def _producer() -> Celery:
    settings = get_settings()
    timeout_seconds = settings.broker_publish_timeout_seconds
    producer = Celery("tally-api", broker=settings.redis_url)
    producer.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="tally",
        broker_connection_retry=False,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "max_retries": 0,
        },
    )
    return producer


def publish_task(name: str, *args: str) -> None:
    """Send task ``name`` with string ``args``; count and re-raise a broker failure.

    Raises:
        Exception: whatever kombu raises when the broker cannot be reached
            (``shared.db.after_commit`` logs it; the sweep recovers).
    """
    try:
        _producer().send_task(name, args=list(args), retry=False)
    except Exception:
        PUBLISH_FAILURES.inc()
        raise


def publish_drain(lane_wallet_id: uuid.UUID) -> None:
    """Publish "lane ``lane_wallet_id`` has pending work" unless such a message is queued.

    Coalesces: one queued ``tally.drain_wallet`` message per lane is enough,
    because the drain applies everything pending in the lane
    (``shared.services.processor.lane_signal_key`` explains why no wakeup is lost).
    """
    settings = get_settings()
    signal_key = lane_signal_key(lane_wallet_id)
    if get_redis().set(signal_key, b"1", nx=True, ex=settings.lane_signal_ttl_seconds):
        try:
            publish_task(DRAIN_WALLET_TASK, str(lane_wallet_id))
        except Exception:
            get_redis().delete(signal_key)
            raise
