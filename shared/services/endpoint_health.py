"""A webhook endpoint's health: failures in a row, the pause they buy, and disabling.

Every failed attempt adds one to the endpoint's ``consecutive_failures``
(starting ``failing_since`` at the first) and pauses the endpoint for the
delivery backoff of that count (``paused_until``): exponential with equal
jitter from ``TALLY_WEBHOOK_BACKOFF_BASE_SECONDS`` to ``..._MAX_SECONDS``
(``shared.retry``). While paused, none of its deliveries is claimed, swept or
published; then one probe goes (``deliveries.due_endpoints``, and a turn ends
at its first failure). A success
clears all three. Once the failures reach ``TALLY_WEBHOOK_DISABLE_AFTER_FAILURES``
*and* ``failing_since`` is ``TALLY_WEBHOOK_DISABLE_AFTER_SECONDS`` old, the
endpoint is disabled: audited as ``webhook_endpoint.disable`` by the actor
``system``, logged at ERROR (``webhook_endpoint_disabled``) and counted in
``tally_webhook_endpoints_disabled_total`` (docs/webhooks.md, "Failing endpoints").
Both thresholds, as Stripe and Svix use a count and a period: a count alone
would disable a busy endpoint during a short outage, a period alone one that
was tried twice in five days.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import func, or_, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.metrics import WEBHOOK_ENDPOINTS_DISABLED
from shared.models import WebhookEndpoint
from shared.retry import backoff_seconds
from shared.services import audit

if TYPE_CHECKING:
    from shared.services.deliveries import Policy

#: Who disables a failing endpoint, in the audit log.
SYSTEM_ACTOR = audit.Actor.system("webhook delivery")

_log = structlog.get_logger(__name__)

_FAILED_SQL = text(
    """
UPDATE webhook_endpoints
SET consecutive_failures = consecutive_failures + 1,
    failing_since = coalesce(failing_since, now())
WHERE id = :id
RETURNING status, consecutive_failures, failing_since,
          extract(epoch FROM now() - failing_since) AS failing_seconds
"""
)


def record_success(session: Session, endpoint_id: uuid.UUID) -> None:
    """Forget the endpoint's failures and pause (no write when there are none)."""
    session.execute(
        update(WebhookEndpoint)
        .where(
            WebhookEndpoint.id == endpoint_id,
            or_(
                WebhookEndpoint.failing_since.is_not(None),
                WebhookEndpoint.consecutive_failures > 0,
                WebhookEndpoint.paused_until.is_not(None),
            ),
        )
        .values(failing_since=None, consecutive_failures=0, paused_until=None)
    )


def record_failure(
    session: Session, endpoint_id: uuid.UUID, *, url: str, error: str | None, policy: Policy
) -> None:
    """Count a failed attempt: pause the endpoint, or disable it past both thresholds.

    Args:
        url: the endpoint's URL, for the ERROR line (without user info or query).
        error: the attempt's error, for the audit record and the log.
    """
    row = session.execute(_FAILED_SQL, {"id": endpoint_id}).one_or_none()
    if row is None or row.status != "enabled":
        return  # deleted, or disabled meanwhile
    failures = row.consecutive_failures
    if (
        failures >= policy.disable_after_failures
        and row.failing_seconds >= policy.disable_after_seconds
    ):
        _disable(session, endpoint_id, url, error, failures, row.failing_since)
        return
    pause = backoff_seconds(
        failures - 1,
        base_seconds=policy.backoff_base_seconds,
        max_seconds=policy.backoff_max_seconds,
    )
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(paused_until=func.now() + dt.timedelta(seconds=pause))
    )


def _disable(
    session: Session,
    endpoint_id: uuid.UUID,
    url: str,
    error: str | None,
    failures: int,
    failing_since: dt.datetime,
) -> None:
    """Disable the endpoint in the caller's transaction, audit it; log and count after commit."""
    since = failing_since.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(
            status="disabled",
            paused_until=None,
            updated_at=func.now(),
            disabled_reason=f"{failures} attempts in a row failed since {since}",
        )
    )
    details = {
        "status": "disabled",
        "consecutive_failures": failures,
        "failing_since": since,
        "last_error": error,
    }
    audit.record(
        session, SYSTEM_ACTOR, audit.AuditAction.WEBHOOK_ENDPOINT_DISABLE, [endpoint_id], details
    )
    fields = {"endpoint_id": str(endpoint_id), "url": audit.url_without_secrets(url)} | details

    def committed() -> None:
        WEBHOOK_ENDPOINTS_DISABLED.inc()
        _log.error("webhook_endpoint_disabled", **fields)

    db.after_commit(session, committed)
