"""Thin tasks for webhooks: a turn at one endpoint's deliveries, one attempt, the sweep (docs/webhooks.md).

Attempts run on the webhooks queue (``broker.WEBHOOKS_QUEUE``), apart from the drains'. The
delivery row, not the message, is the unit of work: a message that is lost,
duplicated or redelivered after a crash changes nothing the sweep does not
repair, so a transient database error just ends the task.
"""

from __future__ import annotations

import functools
import uuid

import structlog
from celery import shared_task

import broker
from shared import db
from shared.config import get_settings
from shared.metrics import WEBHOOK_UNDELIVERED_AGE
from shared.redis_client import get_redis
from shared.services import deliveries
from shared.services.endpoint_slots import EndpointSlots

_log = structlog.get_logger(__name__)


@shared_task(name=broker.DELIVER_WEBHOOK_TASK)
def deliver_webhook(delivery_id: str) -> None:
    """Make one attempt at delivery ``delivery_id`` (a UUID string) if it is due (ops retry)."""
    settings = get_settings()
    try:
        deliveries.attempt_delivery(
            uuid.UUID(delivery_id),
            policy=deliveries.Policy.from_settings(settings),
            slots=_slots(),
        )
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("delivery_deferred_to_sweep", delivery_id=delivery_id, error=str(error))


@shared_task(name=broker.DELIVER_ENDPOINT_TASK)
def deliver_endpoint(endpoint_id: str) -> None:
    """Take a turn at endpoint ``endpoint_id``'s (a UUID string) due deliveries."""
    try:
        get_redis().delete(broker.endpoint_signal_key(endpoint_id))
    except Exception:  # the signal expires by itself
        _log.warning("endpoint_signal_not_cleared", endpoint_id=endpoint_id, exc_info=True)
    try:
        settings = get_settings()
        deliveries.deliver_endpoint(
            uuid.UUID(endpoint_id),
            policy=deliveries.Policy.from_settings(settings),
            slots=_slots(),
            republish=broker.signal_endpoints,
            # The turn holds a slot leased for one attempt lease: end it well inside.
            turn_seconds=min(10.0, settings.webhook_attempt_lease_seconds / 3),
        )
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("delivery_deferred_to_sweep", endpoint_id=endpoint_id, error=str(error))


@functools.cache
def _slots() -> EndpointSlots:
    """Return this process's per-endpoint semaphore (its Lua script registered once)."""
    settings = get_settings()
    return EndpointSlots(
        get_redis(),
        limit=settings.webhook_endpoint_concurrency,
        lease_seconds=settings.webhook_attempt_lease_seconds,
    )


@shared_task(name=broker.SWEEP_WEBHOOK_DELIVERIES_TASK)
def sweep_webhook_deliveries() -> int:
    """Publish every endpoint with a due delivery and no message queued; return how many."""
    try:
        with db.transaction() as session:
            due = deliveries.due_endpoints(session)
            WEBHOOK_UNDELIVERED_AGE.set(deliveries.oldest_undelivered_age_seconds(session))
    except Exception as error:
        if not db.is_transient(error):
            raise
        _log.warning("delivery_sweep_skipped_database_unavailable", error=str(error))
        return 0
    if due:
        try:
            broker.signal_endpoints(due)
        except Exception:  # beat runs the sweep again shortly
            _log.warning("delivery_sweep_publish_failed", endpoints=len(due), exc_info=True)
    return len(due)
