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
until ``retry_window_seconds`` after the delivery was created (api.md: at
least 24 hours), then the delivery is ``failed`` and logged at ERROR. An
endpoint whose every attempt has failed for ``disable_after_seconds`` is
disabled, logged at ERROR and counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.config import Settings
from shared.ledger.errors import Conflict, NotFound
from shared.metrics import WEBHOOK_DELIVERIES, WEBHOOK_ENDPOINTS_DISABLED
from shared.models import Event, WebhookDelivery, WebhookEndpoint
from shared.pagination import created_before, created_cursor
from shared.retry import backoff_seconds
from shared.services import audit, webhook_sender
from shared.services.events import event_public_id, render_events
from shared.services.webhook_endpoints import endpoint_not_found

#: The Celery task that makes one attempt (``worker.webhook_tasks``).
DELIVER_WEBHOOK_TASK = "tally.deliver_webhook"

#: Sends a delivery's message: ``broker.send_delivery`` or ``broker.signal_deliveries``.
Publish = Callable[[uuid.UUID], None]

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
    delivery_id: uuid.UUID, *, policy: Policy, send: Send = webhook_sender.send
) -> str | None:
    """Make one attempt at delivery ``delivery_id`` if it is due; return its status after.

    Opens its own database transactions (one to claim, one to record) and
    sends between them.

    Returns:
        ``succeeded``, ``pending`` (to be retried) or ``failed``; None when
        there was nothing to do: not pending, not due (another attempt holds
        it), its endpoint disabled, or gone.

    Raises:
        sqlalchemy.exc.DBAPIError: the database failed; the sweep sends it again.
    """
    with db.transaction() as session:
        attempt = _claim(session, delivery_id, policy)
    if attempt is None:
        return None
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
    with db.transaction() as session:
        return _record(session, attempt, outcome, policy)


def _claim(session: Session, delivery_id: uuid.UUID, policy: Policy) -> _Attempt | None:
    """Take a due delivery of an enabled endpoint for one attempt; render its body."""
    row = session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= func.now(),
            WebhookEndpoint.status == "enabled",
        )
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).one_or_none()
    if row is None:
        return None
    delivery, endpoint = row
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
    session: Session, attempt: _Attempt, outcome: webhook_sender.Outcome, policy: Policy
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
        session.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.id == attempt.endpoint_id,
                WebhookEndpoint.failing_since.is_not(None),
            )
            .values(failing_since=None)
        )
        db.after_commit(session, lambda: WEBHOOK_DELIVERIES.labels(outcome="succeeded").inc())
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
    _disable_if_failing(session, attempt.endpoint_id, policy)
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


_DISABLE_SQL = text(
    """
UPDATE webhook_endpoints
SET status = 'disabled', updated_at = now(),
    disabled_reason = 'every delivery failed since ' || to_char(failing_since AT TIME ZONE 'UTC',
                                                               'YYYY-MM-DD"T"HH24:MI:SS"Z"')
WHERE id = :id AND status = 'enabled'
  AND failing_since <= now() - make_interval(secs => :after_seconds)
RETURNING url, failing_since
"""
)


def _disable_if_failing(session: Session, endpoint_id: uuid.UUID, policy: Policy) -> None:
    """Start the endpoint's failing clock, and disable it once it has run for long enough."""
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_(None))
        .values(failing_since=func.now())
    )
    disabled = session.execute(
        _DISABLE_SQL, {"id": endpoint_id, "after_seconds": policy.disable_after_seconds}
    ).one_or_none()
    if disabled is not None:
        fields = {
            "endpoint_id": str(endpoint_id),
            "url": disabled.url,
            "failing_since": disabled.failing_since.isoformat(),
        }

        def committed() -> None:
            WEBHOOK_ENDPOINTS_DISABLED.inc()
            _log.error("webhook_endpoint_disabled", **fields)

        db.after_commit(session, committed)


def due_deliveries(session: Session, *, limit: int = 1000) -> list[uuid.UUID]:
    """Return pending deliveries of enabled endpoints whose next attempt is due, oldest first.

    The delivery sweep sends them: retries whose backoff has passed, and
    deliveries whose message was lost (Redis emptied) or whose worker died.
    """
    return list(
        session.scalars(
            select(WebhookDelivery.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= func.now(),
                WebhookEndpoint.status == "enabled",
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        )
    )


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
