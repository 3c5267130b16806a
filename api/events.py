"""``/v1/events``: the outbox of status changes, newest first (docs/webhooks.md).

A service key sees the events of the transactions it submitted, as it sees
those transactions' idempotency keys; an ops key sees every event, the
reconciliation ones included, because operators watch the whole ledger.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, g

from api.render import page
from api.requests import query
from api.responses import Event
from api.schemas import ListQuery
from shared import db
from shared.models import EventType
from shared.services.api_keys import Role
from shared.services.events import list_events

blueprint = Blueprint("events", __name__, url_prefix="/v1/events")


class EventListQuery(ListQuery):
    """``GET /v1/events`` filters."""

    type: EventType | None = None
    transaction_id: uuid.UUID | None = None


@blueprint.get("")
def list_all() -> Response:
    """List events, newest first: ``{"data": [Event], "next_cursor"}``."""
    params = query(EventListQuery)
    with db.transaction() as session:
        rows, next_cursor = list_events(
            session,
            api_key_id=None if g.role is Role.OPS else g.api_key_id,
            type_=params.type,
            transaction_id=params.transaction_id,
            limit=params.limit,
            cursor=params.cursor,
        )
    return page(Event, rows, next_cursor)
