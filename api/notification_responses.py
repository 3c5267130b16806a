"""Response schemas of the notification calls (events, webhook endpoints and deliveries).

Like ``api.responses``: what ``api.events`` and ``api.webhooks`` render,
field for field, for the OpenAPI document; unknown fields are forbidden so
the schemathesis run catches drift.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.responses import BalanceMonitorEvent, ReconciliationRun, Timestamp, Transaction

EventType = Literal[
    "transaction.completed", "transaction.failed", "transaction.held", "transaction.voided",
    "transaction.expired", "balance_monitor.triggered", "balance_monitor.cleared",
    "reconciliation.mismatch", "reconciliation.error",
]  # fmt: skip
EventId = Annotated[str, StringConstraints(pattern=r"^evt_[0-9a-f]{32}$")]

_ID = "7d1f7c3e-1b7a-4c55-9a57-0c1e2f3a4b5c"
_AT = "2026-11-22T10:00:00.000000Z"
_EVENT_ID = "evt_0b9e8d7c6f5a4e3d8c2b1a0f9e8d7c6b"


def _closed(example: dict[str, object]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


EVENT_EXAMPLE = {
    "id": _EVENT_ID, "type": "reconciliation.error", "created_at": _AT,
    "data": {"id": _ID, "status": "error", "started_at": _AT, "finished_at": _AT,
             "wallets_checked": 0, "mismatches": [], "currency_totals": {}, "error": "timeout"},
}  # fmt: skip


class Event(BaseModel):
    """A notification: what changed, and the object as it was at that moment (``data``)."""

    model_config = _closed(EVENT_EXAMPLE)

    id: EventId
    type: EventType
    created_at: Timestamp
    data: Transaction | ReconciliationRun | BalanceMonitorEvent | None


ENDPOINT_EXAMPLE = {
    "id": _ID, "url": "https://example.com/tally-hooks", "events": ["transaction.failed"],
    "description": "on-call pager", "status": "enabled", "disabled_reason": None,
    "created_at": _AT, "updated_at": _AT,
}  # fmt: skip


class WebhookEndpoint(BaseModel):
    """A registered receiver of events (its secret is shown only when it is created)."""

    model_config = _closed(ENDPOINT_EXAMPLE)

    id: uuid.UUID
    url: str
    events: list[EventType]
    description: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class WebhookEndpointCreated(WebhookEndpoint):
    """A new endpoint and its signing secret (Standard Webhooks ``whsec_``), shown this once."""

    model_config = _closed(ENDPOINT_EXAMPLE | {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})

    secret: Annotated[str, StringConstraints(pattern=r"^whsec_")]


DELIVERY_EXAMPLE = {
    "id": _ID, "event_id": _EVENT_ID, "event_type": "transaction.failed", "endpoint_id": _ID,
    "status": "pending", "attempts": 1, "last_status_code": 503, "last_error": None,
    "next_attempt_at": _AT, "delivered_at": None, "created_at": _AT,
}  # fmt: skip


class WebhookDelivery(BaseModel):
    """One event's delivery to one endpoint, retried with backoff until it succeeds or fails."""

    model_config = _closed(DELIVERY_EXAMPLE)

    id: uuid.UUID
    event_id: EventId
    event_type: EventType
    endpoint_id: uuid.UUID
    status: Literal["pending", "succeeded", "failed"]
    attempts: Annotated[int, Field(ge=0)]
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    created_at: Timestamp
