"""``/v1/audit-events`` (ops): the audit log of operator actions, newest first."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from api.auth import require_role
from api.render import page_json, timestamp
from api.requests import query
from api.schemas import AuditEventListQuery
from shared import db
from shared.models import AuditEvent
from shared.services import audit
from shared.services.api_keys import Role

blueprint = Blueprint("audit", __name__, url_prefix="/v1/audit-events")


def event_json(event: AuditEvent) -> dict[str, Any]:
    """Render an AuditEvent object: who (``actor``), what, to which ids, when, which request."""
    return {
        "id": str(event.id),
        "action": event.action,
        "actor": {
            "type": event.actor_type,
            "api_key_id": None if event.actor_key_id is None else str(event.actor_key_id),
            "name": event.actor_name,
        },
        "target_ids": [str(target) for target in event.target_ids],
        "details": event.details,
        "request_id": event.request_id,
        "created_at": timestamp(event.created_at),
    }


@blueprint.get("")
@require_role(Role.OPS)
def list_events() -> Response:
    """List audit events, newest first, filtered by ``action`` and ``target_id``."""
    params = query(AuditEventListQuery)
    with db.transaction() as session:
        rows, next_cursor = audit.list_events(
            session,
            action=params.action,
            target_id=params.target_id,
            limit=params.limit,
            cursor=params.cursor,
        )
    return jsonify(page_json([event_json(e) for e in rows], next_cursor))
