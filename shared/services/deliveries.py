"""Webhook deliveries: one attempt at a time, backoff, the final ``failed``, the sweep, ops retry.

A delivery row is the unit of work; a broker message only says "this one may
be due". An attempt claims the row in a short transaction (``attempts + 1``,
``next_attempt_at`` moved one lease ahead, so a duplicate message finds it
not due), sends outside any transaction (a slow receiver holds no lock and no
connection), then records the answer in a second one. A worker that dies
between the two leaves the row pending with an expired lease: the delivery
sweep sends it again, so delivery is at least once; receivers deduplicate by
``webhook-id`` (api.md).

Failed attempts are retried with exponential backoff and equal jitter
(``shared.retry``; AWS Architecture Blog, "Exponential Backoff And Jitter")
until ``retry_window_seconds`` after the delivery was created (the contract:
at least 24 hours), then the delivery is ``failed`` and logged at ERROR.

A failure also pauses the endpoint (``paused_until``, the same backoff over
its ``consecutive_failures``): no delivery of it is claimed, published by the
sweep or published at creation until then, and then one probe goes first. So
a dead receiver costs one attempt per pause, not one per event, and never
stands in the queue in front of a live one. At most ``limit`` attempts are in
flight to one endpoint (``EndpointSlots``). An endpoint whose attempts failed
``disable_after_failures`` times in a row and for ``disable_after_seconds`` is
disabled: audited (actor ``system``), logged at ERROR and counted
(docs/webhooks.md, "Failing endpoints").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.config import Settings
from shared.ledger.errors import Conflict, NotFound
from shared.metrics import WEBHOOK_DELIVERIES
from shared.models import Event, WebhookDelivery, WebhookEndpoint
from shared.pagination import created_before, created_cursor
from shared.retry import backoff_seconds
from shared.services import audit, endpoint_health, webhook_sender
from shared.services.endpoint_slots import EndpointSlots
from shared.services.events import event_public_id, render_events
from shared.services.webhook_endpoints import endpoint_not_found

#: The Celery task that makes one attempt (``worker.webhook_tasks``).
DELIVER_WEBHOOK_TASK = "tally.deliver_webhook"

#: Sends a delivery's message: ``broker.send_delivery`` or ``broker.signal_deliveries``.
Publish = Callable[[uuid.UUID], None]

#: Sends the messages of several deliveries: ``broker.signal_deliveries``.
PublishMany = Callable[[Sequence[uuid.UUID]], None]

#: How an attempt is sent: ``webhook_sender.send``'s signature (a test may pass its own).
Send = Callable[..., webhook_sender.Outcome]

_log = structlog.get_logger(__name__)


def delivery_signal_key(delivery_id: uuid.UUID | str) -> str:
    """Return the Redis key that marks "a message for this delivery is queued".

    The sweep publishes a due delivery only when it can ``SET NX`` this key, so
    a backlog does not fill the queue with copies; the task deletes it first.
    The key expires, so a lost message delays the delivery by one lease at most.
    """
    return f"tally:delivery:{delivery_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """The delivery settings (seconds), from ``shared.config``'s ``TALLY_WEBHOOK_*``."""

    timeout_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    retry_window_seconds: float
    disable_after_failures: int
    disable_after_seconds: float
    attempt_lease_seconds: float
    allow_private_networks: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """Return the policy ``settings`` configure."""
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            backoff_base_seconds=settings.webhook_backoff_base_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            retry_window_seconds=settings.webhook_retry_window_seconds,
            disable_after_failures=settings.webhook_disable_after_failures,
            disable_after_seconds=settings.webhook_disable_after_seconds,
            attempt_lease_seconds=settings.webhook_attempt_lease_seconds,
            allow_private_networks=settings.webhook_allow_private_networks,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Attempt:
    """A claimed attempt: what to send where; the secret never leaves this object."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secret: str
    message_id: str
    body: str
    attempts: int


def attempt_delivery(
    delivery_id: uuid.UUID,
    *,
    policy: Policy,
    send: Send = webhook_sender.send,
    slots: EndpointSlots | None = None,
    publish_next: PublishMany | None = None,
) -> str | None:
    """Make one attempt at delivery ``delivery_id`` if it is due; return its status after.

    Opens its own database transactions (one to claim, one to record) and
    sends between them.

    Args:
        slots: the per-endpoint semaphore; None: no bound (tests of one attempt).
        publish_next: after a success, called (after commit) with the endpoint's
            next due delivery, so a receiver with a backlog is fed by its own
            successes rather than by the sweep's pace.

    Returns:
        ``succeeded``, ``pending`` (to be retried) or ``failed``; None when
        there was nothing to do: not pending, not due (another attempt holds
        it), its endpoint disabled, paused or with every slot taken, or gone.

    Raises:
        sqlalchemy.exc.DBAPIError: the database failed; the sweep sends it again.
    """
    with db.transaction() as session:
        attempt = _claim(session, delivery_id, policy, slots)
    if attempt is None:
        return None
    try:
        headers = webhook_sender.signature_headers(
            attempt.secret, attempt.message_id, attempt.body, at=dt.datetime.now(dt.UTC)
        )
        outcome = send(
            attempt.url,
            attempt.body,
            headers,
            timeout_seconds=policy.timeout_seconds,
            allow_private_networks=policy.allow_private_networks,
        )
    finally:
        # Before the record: the next delivery it publishes must find the slot free.
        if slots is not None:
            slots.release(attempt.endpoint_id, attempt.delivery_id)
    with db.transaction() as session:
        return _record(session, attempt, outcome, policy, publish_next)


def _claim(
    session: Session, delivery_id: uuid.UUID, policy: Policy, slots: EndpointSlots | None
) -> _Attempt | None:
    """Take a due delivery of an enabled, unpaused endpoint and one of its slots; render it."""
    row = session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= func.now(),
            WebhookEndpoint.status == "enabled",
            or_(WebhookEndpoint.paused_until.is_(None), WebhookEndpoint.paused_until <= func.now()),
        )
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).one_or_none()
    if row is None:
        return None
    delivery, endpoint = row
    if slots is not None and not slots.acquire(endpoint.id, delivery.id):
        # Every slot is taken: the delivery stays due. The attempt that frees a slot
        # publishes the next one (publish_next), and the sweep sends what is left.
        return None
    event = session.get(Event, delivery.event_id)
    assert event is not None  # a foreign key
    body = json.dumps(render_events(session, [event])[0], separators=(",", ":"))
    delivery.attempts += 1
    delivery.next_attempt_at = func.now() + dt.timedelta(seconds=policy.attempt_lease_seconds)
    delivery.updated_at = func.now()
    return _Attempt(
        delivery.id,
        endpoint.id,
        endpoint.url,
        endpoint.secret,
        event_public_id(event.id),
        body,
        delivery.attempts,
    )


def _record(
    session: Session,
    attempt: _Attempt,
    outcome: webhook_sender.Outcome,
    policy: Policy,
    publish_next: PublishMany | None,
) -> str | None:
    """Record an attempt's answer: succeeded, retry later, or failed for good."""
    delivery = session.get(WebhookDelivery, attempt.delivery_id, with_for_update=True)
    if delivery is None or delivery.status != "pending":
        return None  # the endpoint was deleted meanwhile
    now = session.execute(select(func.now())).scalar_one()
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    delivery.updated_at = now
    if outcome.succeeded:
        delivery.status = "succeeded"
        delivery.next_attempt_at = None
        delivery.delivered_at = now
        endpoint_health.record_success(session, attempt.endpoint_id)
        following = _due_of_endpoint(session, attempt.endpoint_id, limit=1) if publish_next else []

        def succeeded() -> None:
            WEBHOOK_DELIVERIES.labels(outcome="succeeded").inc()
            if following and publish_next is not None:
                publish_next(following)  # raising is logged by db.transaction; the sweep sends it

        db.after_commit(session, succeeded)
        return delivery.status
    if now - delivery.created_at >= dt.timedelta(seconds=policy.retry_window_seconds):
        delivery.status = "failed"
        delivery.next_attempt_at = None
        fields = _log_fields(attempt, outcome)
        db.after_commit(session, lambda: _failed_for_good(fields))
    else:
        delay = backoff_seconds(
            attempt.attempts - 1,
            base_seconds=policy.backoff_base_seconds,
            max_seconds=policy.backoff_max_seconds,
        )
        delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
        db.after_commit(session, lambda: WEBHOOK_DELIVERIES.labels(outcome="retrying").inc())
        _log.warning(
            "webhook_attempt_failed",
            retry_in_seconds=round(delay, 3),
            **_log_fields(attempt, outcome),
        )
    endpoint_health.record_failure(
        session, attempt.endpoint_id, url=attempt.url, error=outcome.error, policy=policy
    )
    return delivery.status


def _log_fields(attempt: _Attempt, outcome: webhook_sender.Outcome) -> dict[str, object]:
    """Return what a log line says of an attempt: ids, URL, answer; never the secret."""
    return {
        "delivery_id": str(attempt.delivery_id),
        "endpoint_id": str(attempt.endpoint_id),
        "event_id": attempt.message_id,
        "url": attempt.url,
        "attempts": attempt.attempts,
        "status_code": outcome.status_code,
        "error": outcome.error,
    }


def _failed_for_good(fields: dict[str, object]) -> None:
    WEBHOOK_DELIVERIES.labels(outcome="failed").inc()
    _log.error("webhook_delivery_failed", **fields)


#: Per enabled, unpaused endpoint, its oldest due deliveries: ``:per_endpoint`` of a
#: healthy one, one (a probe) of one that has been failing.
_DUE_SQL = text(
    """
SELECT d.id FROM webhook_endpoints w
CROSS JOIN LATERAL (
    SELECT id, next_attempt_at FROM webhook_deliveries
    WHERE endpoint_id = w.id AND status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT CASE WHEN w.consecutive_failures > 0 THEN 1 ELSE :per_endpoint END
) d
WHERE w.status = 'enabled' AND (w.paused_until IS NULL OR w.paused_until <= now())
ORDER BY d.next_attempt_at
LIMIT :limit
"""
)


def _due_of_endpoint(session: Session, endpoint_id: uuid.UUID, *, limit: int) -> list[uuid.UUID]:
    """Return the oldest ``limit`` due, pending deliveries of one endpoint."""
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= func.now(),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


def due_deliveries(session: Session, *, per_endpoint: int, limit: int = 1000) -> list[uuid.UUID]:
    """Return due, pending deliveries of enabled, unpaused endpoints, oldest first.

    The delivery sweep sends them: retries whose backoff has passed, deliveries
    whose message was lost (Redis emptied), whose worker died, or that found
    every slot of their endpoint taken. At most ``per_endpoint`` per endpoint
    (its slots: more would only be refused), and one of an endpoint that has
    been failing, as a probe: a dead endpoint's backlog never fills the pass.
    """
    params = {"per_endpoint": per_endpoint, "limit": limit}
    return list(session.scalars(_DUE_SQL, params))


def oldest_undelivered_age_seconds(session: Session) -> float:
    """Return the age in seconds of the oldest pending delivery to an enabled endpoint (0: none)."""
    age = session.scalar(
        select(func.extract("epoch", func.now() - func.min(WebhookDelivery.created_at)))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status == "pending", WebhookEndpoint.status == "enabled")
    )
    return float(age or 0)


def delivery_not_found(delivery_id: uuid.UUID) -> NotFound:
    """Return the ``webhook_delivery_not_found`` error for ``delivery_id``."""
    return NotFound(
        f"webhook delivery {delivery_id} does not exist", code="webhook_delivery_not_found"
    )


def retry_delivery(
    session: Session,
    delivery_id: uuid.UUID,
    *,
    publish: Publish,
    actor: audit.Actor | None = None,
) -> tuple[WebhookDelivery, str]:
    """Make a delivery due now, whatever its status, and publish it after commit.

    ``actor``, when given, appends ``webhook_delivery.retry`` to the audit log.

    Returns:
        ``(delivery, event_type)``.

    Raises:
        NotFound: ``webhook_delivery_not_found``.
        Conflict: ``webhook_endpoint_disabled``: its endpoint is disabled; enable it first.
    """
    row = session.execute(
        select(WebhookDelivery, WebhookEndpoint.status, Event.type)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(of=WebhookDelivery)
    ).one_or_none()
    if row is None:
        raise delivery_not_found(delivery_id)
    delivery, endpoint_status, event_type = row
    if endpoint_status != "enabled":
        raise Conflict(
            f"endpoint {delivery.endpoint_id} is disabled; enable it first",
            code="webhook_endpoint_disabled",
        )
    now = session.execute(select(func.now())).scalar_one()
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.updated_at = now
    # An operator asks for an attempt now: a failing endpoint's pause does not delay it.
    session.execute(
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == delivery.endpoint_id, WebhookEndpoint.paused_until.is_not(None)
        )
        .values(paused_until=None)
    )
    session.flush()
    db.after_commit(session, lambda: publish(delivery_id))
    if actor is not None:
        audit.record(session, actor, audit.AuditAction.WEBHOOK_DELIVERY_RETRY, [delivery_id])
    return delivery, event_type


def list_deliveries(
    session: Session,
    endpoint_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[tuple[WebhookDelivery, str]], str | None]:
    """Return a page of an endpoint's deliveries with their event types, newest first.

    Raises:
        NotFound: ``webhook_endpoint_not_found``.
        ValidationFailed: ``invalid_cursor``.
    """
    if session.get(WebhookEndpoint, endpoint_id) is None:
        raise endpoint_not_found(endpoint_id)
    query = (
        select(WebhookDelivery, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if cursor is not None:
        query = query.where(created_before(WebhookDelivery.created_at, WebhookDelivery.id, cursor))
    rows = [(delivery, event_type) for delivery, event_type in session.execute(query)]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = created_cursor(rows[-1][0].created_at, rows[-1][0].id)
    return rows, next_cursor
