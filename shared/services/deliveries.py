"""Webhook deliveries: turns at an endpoint's deliveries, backoff, the final ``failed``, the sweep.

A delivery row is the unit of work; a broker message only says "this
endpoint may have due deliveries" (one queued per endpoint at most). A turn
(:func:`deliver_endpoint`) claims a batch of the endpoint's due rows in a short
transaction (``attempts + 1``, ``next_attempt_at`` moved one lease ahead, so
another turn skips them), sends them one by one outside any transaction (a
slow receiver holds no lock and no connection), then records the answers in a
second one (the successes with one statement). A worker that dies between the two leaves the rows pending with
an expired lease: the delivery sweep sends them again, so delivery is at
least once; receivers deduplicate by ``webhook-id`` (docs/webhooks.md).

Failed attempts are retried with exponential backoff and equal jitter
(``shared.retry``; AWS Architecture Blog, "Exponential Backoff And Jitter")
until ``retry_window_seconds`` after the delivery was created (the contract:
at least 24 hours), then the delivery is ``failed`` and logged at ERROR.

A failure also pauses the endpoint and ends the turn
(``shared.services.endpoint_health``): while paused, none of its deliveries
is claimed, swept or published at creation; then one probe goes. So a dead
receiver costs one attempt per pause, not one per event, and never stands in
the queue in front of a live one. At most ``TALLY_WEBHOOK_ENDPOINT_CONCURRENCY``
turns run at one endpoint (``EndpointSlots``) (docs/webhooks.md, "Failing
endpoints").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session

import broker
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

#: Publishes "these endpoints have due deliveries": ``broker.signal_endpoints``.
PublishEndpoints = Callable[[Sequence[uuid.UUID]], None]

#: How long one task keeps working through an endpoint's deliveries before it
#: hands over to a new message (so other endpoints' messages get their turn).
_ENDPOINT_TURN_SECONDS = 10.0

#: Deliveries a turn claims, renders and records per transaction: sent one by one.
_TURN_BATCH = 20

#: How an attempt is sent: ``webhook_sender.send``'s signature (a test may pass its own).
Send = Callable[..., webhook_sender.Outcome]

_log = structlog.get_logger(__name__)


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
) -> str | None:
    """Make one attempt at delivery ``delivery_id`` if it is due; return its status after.

    Opens its own database transactions (one to claim, one to record) and
    sends between them. The ops retry uses it; new deliveries and retries go
    through :func:`deliver_endpoint`.

    Args:
        slots: the per-endpoint semaphore; None: no bound.

    Returns:
        ``succeeded``, ``pending`` (to be retried) or ``failed``; None when
        there was nothing to do: not pending, not due (another attempt holds
        it), its endpoint disabled, paused or with every slot taken, or gone.

    Raises:
        sqlalchemy.exc.DBAPIError: the database failed; the sweep sends it again.
    """
    holder = uuid.uuid4()
    try:
        with db.transaction() as session:
            attempt = _claim(session, policy, WebhookDelivery.id == delivery_id)
            taken = attempt is None or slots is None or slots.acquire(attempt.endpoint_id, holder)
            if not taken:
                raise _NoSlot  # rolls the claim back: the delivery stays due for the sweep
    except _NoSlot:
        return None
    if attempt is None:
        return None
    try:
        outcome = _send(attempt, policy, send)
    finally:
        if slots is not None:
            slots.release(attempt.endpoint_id, holder)
    with db.transaction() as session:
        return _record(session, attempt, outcome, policy)


class _NoSlot(Exception):
    """Every slot of the endpoint is held: undo the claim."""


def deliver_endpoint(
    endpoint_id: uuid.UUID,
    *,
    policy: Policy,
    slots: EndpointSlots,
    republish: PublishEndpoints,
    send: Send = webhook_sender.send,
    turn_seconds: float = _ENDPOINT_TURN_SECONDS,
) -> int:
    """Attempt endpoint ``endpoint_id``'s due deliveries, oldest first, while it answers 2xx.

    Holds one of the endpoint's slots for the whole turn, or does nothing when
    all are held (the tasks holding them go on until nothing is due). Stops at
    the first failure: the endpoint is now paused, and its next attempt is the
    probe the sweep sends when the pause ends. After ``turn_seconds`` it hands
    over: ``republish`` queues a new message for the endpoint behind the others.

    Returns:
        The attempts made.

    Raises:
        sqlalchemy.exc.DBAPIError: the database failed; the sweep sends it again.
    """
    holder = uuid.uuid4()
    if not slots.acquire(endpoint_id, holder):
        return 0
    made, deadline, handover = 0, time.monotonic() + turn_seconds, False
    try:
        failed = False
        while not failed:
            with db.transaction() as session:
                batch = _claim_many(
                    session, policy, WebhookDelivery.endpoint_id == endpoint_id, limit=_TURN_BATCH
                )
            if not batch:
                break
            sent = []
            for attempt in batch:
                outcome = _send(attempt, policy, send)
                sent.append((attempt, outcome))
                if not outcome.succeeded:
                    failed = True  # the endpoint is paused by this failure: stop here
                    break
            with db.transaction() as session:
                _record_successes(session, sent)
                for attempt, outcome in sent:
                    if not outcome.succeeded:
                        _record(session, attempt, outcome, policy)
                _unclaim(session, [a.delivery_id for a in batch[len(sent) :]])
            made += len(sent)
            if not failed and time.monotonic() > deadline:
                handover = True
                break
    finally:
        slots.release(endpoint_id, holder)
    if handover:
        republish([endpoint_id])
    return made


def _unclaim(session: Session, delivery_ids: Sequence[uuid.UUID]) -> None:
    """Give back claimed deliveries that were not sent: due again, their attempt not counted."""
    if delivery_ids:
        session.execute(
            update(WebhookDelivery)
            .where(db.any_of(WebhookDelivery.id, delivery_ids), WebhookDelivery.status == "pending")
            .values(attempts=WebhookDelivery.attempts - 1, next_attempt_at=func.now())
        )


def _send(attempt: _Attempt, policy: Policy, send: Send) -> webhook_sender.Outcome:
    """Sign and send one claimed attempt; never raise (``webhook_sender.send``)."""
    headers = webhook_sender.signature_headers(
        attempt.secret, attempt.message_id, attempt.body, at=dt.datetime.now(dt.UTC)
    )
    return send(
        attempt.url,
        attempt.body,
        headers,
        timeout_seconds=policy.timeout_seconds,
        allow_private_networks=policy.allow_private_networks,
    )


def _claim(session: Session, policy: Policy, which: Any) -> _Attempt | None:
    """Take the oldest due delivery matching ``which`` of an enabled, unpaused endpoint; render it."""
    attempts = _claim_many(session, policy, which, limit=1)
    return attempts[0] if attempts else None


def _claim_many(session: Session, policy: Policy, which: Any, *, limit: int) -> list[_Attempt]:
    """Take the oldest ``limit`` due deliveries matching ``which`` of enabled, unpaused endpoints.

    One statement locks them (``SKIP LOCKED``), one rendering reads their events
    (three reads whatever their number): a turn pays per batch, not per attempt.
    """
    rows = session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            which,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= func.now(),
            WebhookEndpoint.status == "enabled",
            or_(WebhookEndpoint.paused_until.is_(None), WebhookEndpoint.paused_until <= func.now()),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)  # ids are UUIDv7
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()
    if not rows:
        return []
    events = {
        e.id: e
        for e in session.scalars(
            select(Event).where(db.any_of(Event.id, [delivery.event_id for delivery, _ in rows]))
        )
    }
    ordered = [events[delivery.event_id] for delivery, _ in rows]  # a foreign key: present
    bodies = [
        json.dumps(r.model_dump(mode="json"), separators=(",", ":"))
        for r in render_events(session, ordered)
    ]
    claimed = []
    for (delivery, endpoint), event, body in zip(rows, ordered, bodies, strict=True):
        delivery.attempts += 1
        delivery.next_attempt_at = func.now() + dt.timedelta(seconds=policy.attempt_lease_seconds)
        delivery.updated_at = func.now()
        claimed.append(
            _Attempt(
                delivery.id,
                endpoint.id,
                endpoint.url,
                endpoint.secret,
                event_public_id(event.id),
                body,
                delivery.attempts,
            )
        )
    return claimed


_SUCCEEDED_SQL = text(
    """
    UPDATE webhook_deliveries AS d
       SET status = 'succeeded', last_status_code = v.status_code, last_error = NULL,
           next_attempt_at = NULL, delivered_at = now(), updated_at = now()
      FROM unnest(CAST(:ids AS uuid[]), CAST(:status_codes AS integer[])) AS v(id, status_code)
     WHERE d.id = v.id AND d.status = 'pending'
    """
)


def _record_successes(
    session: Session, sent: Sequence[tuple[_Attempt, webhook_sender.Outcome]]
) -> None:
    """Record a turn's delivered attempts with one statement, and the endpoint's health once.

    The per-attempt path (:func:`_record`) costs four statements an attempt; a
    turn at a live endpoint records up to ``_TURN_BATCH`` successes at a time.

    Args:
        sent: the attempts of a turn's batch, all to one endpoint, with their outcomes; the
            ones answered 2xx are recorded here, the others by :func:`_record`.
    """
    succeeded = [(a, o) for a, o in sent if o.succeeded]
    if not succeeded:
        return
    session.execute(
        _SUCCEEDED_SQL,
        {
            "ids": [a.delivery_id for a, _ in succeeded],
            "status_codes": [o.status_code for _, o in succeeded],
        },
    )
    endpoint_health.record_success(session, succeeded[0][0].endpoint_id)
    count = len(succeeded)
    db.after_commit(session, lambda: WEBHOOK_DELIVERIES.labels(outcome="succeeded").inc(count))


def _record(
    session: Session,
    attempt: _Attempt,
    outcome: webhook_sender.Outcome,
    policy: Policy,
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


def due_endpoints(session: Session, *, limit: int = 10000) -> list[uuid.UUID]:
    """Return the enabled, unpaused endpoints that have a due, pending delivery.

    The delivery sweep publishes them (``broker.signal_endpoints``): retries
    whose backoff has passed, a paused endpoint's probe once its pause ends,
    and deliveries whose message was lost (Redis emptied) or whose worker died.
    A paused endpoint is not returned, however many deliveries it has waiting.
    """
    return list(
        session.scalars(
            select(WebhookEndpoint.id)
            .where(
                WebhookEndpoint.status == "enabled",
                or_(
                    WebhookEndpoint.paused_until.is_(None),
                    WebhookEndpoint.paused_until <= func.now(),
                ),
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.endpoint_id == WebhookEndpoint.id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= func.now(),
                )
                .exists(),
            )
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
    actor: audit.Actor | None = None,
) -> tuple[WebhookDelivery, str]:
    """Make a delivery due now, whatever its status, and send one attempt after commit.

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
    broker.send_after_commit(session, broker.deliver_webhook(delivery_id))
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
