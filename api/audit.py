"""``/v1/audit-events`` (ops): the audit log of operator actions, newest first."""

from __future__ import annotations

from flask import Blueprint, Response

from api.auth import require_role
from api.render import page
from api.requests import query
from api.responses import AuditEvent
from api.schemas import AuditEventListQuery
from shared import db
from shared.services import audit
from shared.services.api_keys import Role

blueprint = Blueprint("audit", __name__, url_prefix="/v1/audit-events")


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
    return page(AuditEvent, rows, next_cursor)
