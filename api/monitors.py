"""``/v1/balance-monitors``: create, read, list, delete (docs/api-conventions.md, "Balance monitors").

Service keys manage monitors, as they manage wallets. A monitor's events
(``balance_monitor.triggered``, ``.cleared``) belong to the key that created
it, as a transaction's events belong to the key that submitted it.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from flask import Blueprint, Response, g
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.render import answer, page
from api.requests import json_body, path_id, query
from api.schemas import Description, ListQuery
from shared import db
from shared.ledger.monitors import MonitorField, MonitorOperator
from shared.rendering import BalanceMonitor, With
from shared.services import monitors

blueprint = Blueprint("monitors", __name__, url_prefix="/v1/balance-monitors")

#: A threshold's form: zero, or a decimal in major units with an optional ``-``;
#: its digits are checked against the wallet's currency (ISO 4217) by the service.
THRESHOLD_PATTERN = r"^-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,4})?$"


class MonitorCreate(BaseModel):
    """``POST /v1/balance-monitors`` body."""

    model_config = ConfigDict(extra="forbid")

    wallet_id: uuid.UUID
    field: MonitorField
    operator: MonitorOperator
    value: Annotated[
        str,
        StringConstraints(pattern=THRESHOLD_PATTERN),
        Field(examples=["100.00"], description="In the wallet's currency; zero or negative too."),
    ]
    description: Description | None = None


class MonitorListQuery(ListQuery):
    """``GET /v1/balance-monitors`` filters."""

    wallet_id: uuid.UUID | None = None


def _monitor_id(value: str) -> uuid.UUID:
    return path_id(value, not_found_code="balance_monitor_not_found")


@blueprint.post("")
def create_monitor() -> Response:
    """Create a monitor, evaluated at once: 201 with ``Location``; 404 ``wallet_not_found``."""
    body = MonitorCreate.model_validate(json_body())
    with db.transaction() as session:
        monitor, currency = monitors.create_monitor(
            session,
            wallet_id=body.wallet_id,
            field=body.field,
            operator=body.operator,
            value=body.value,
            description=body.description,
            api_key_id=g.api_key_id,
        )
    location = {"Location": f"/v1/balance-monitors/{monitor.id}"}
    return answer(BalanceMonitor, With(monitor, currency=currency), 201, location)


@blueprint.get("")
def list_monitors() -> Response:
    """List monitors, newest first, optionally of one ``wallet_id``."""
    params = query(MonitorListQuery)
    with db.transaction() as session:
        rows, next_cursor = monitors.list_monitors(
            session, wallet_id=params.wallet_id, limit=params.limit, cursor=params.cursor
        )
    return page(BalanceMonitor, [With(m, currency=c) for m, c in rows], next_cursor)


@blueprint.get("/<monitor_id>")
def get_monitor(monitor_id: str) -> Response:
    """Return one monitor."""
    with db.transaction() as session:
        monitor, currency = monitors.get_monitor(session, _monitor_id(monitor_id))
    return answer(BalanceMonitor, With(monitor, currency=currency))


@blueprint.delete("/<monitor_id>")
def delete_monitor(monitor_id: str) -> tuple[str, int]:
    """Delete a monitor: 204; its events stay."""
    with db.transaction() as session:
        monitors.delete_monitor(session, _monitor_id(monitor_id))
    return "", 204
