"""``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries`` (ops): docs/api.md, "Webhooks".

The endpoint's ``secret`` is in the answer to its creation only; no other
answer, log line or delivery record carries it (docs/webhooks.md).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, get_args

from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.auth import current_actor, require_role
from api.render import answer, page
from api.requests import json_body, path_id, query
from api.responses import WebhookDelivery, WebhookEndpoint, WebhookEndpointCreated
from api.schemas import ListQuery
from shared import db
from shared.config import get_settings
from shared.models import EventType
from shared.rendering import With
from shared.services import deliveries, webhook_endpoints
from shared.services.api_keys import Role

blueprint = Blueprint("webhooks", __name__, url_prefix="/v1")

_STRICT = ConfigDict(extra="forbid")
Url = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^https?://\S+$")]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(get_args(EventType)))]


class EndpointCreate(BaseModel):
    """``POST /v1/webhook-endpoints`` body."""

    model_config = _STRICT

    url: Url
    events: EventTypes | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


class EndpointPatch(BaseModel):
    """``PATCH /v1/webhook-endpoints/{id}`` body: at least one field."""

    model_config = _STRICT

    status: Literal["enabled", "disabled"] | None = None
    events: EventTypes | None = None
    url: Url | None = None

    @model_validator(mode="after")
    def _something(self) -> EndpointPatch:
        if self.status is None and self.events is None and self.url is None:
            raise ValueError("send status, events or url")
        return self


class DeliveryListQuery(ListQuery):
    """``GET /v1/webhook-endpoints/{id}/deliveries`` filters."""

    status: Literal["pending", "succeeded", "failed"] | None = None


def _endpoint_id(value: str) -> uuid.UUID:
    return path_id(value, not_found_code="webhook_endpoint_not_found")


@blueprint.post("/webhook-endpoints")
@require_role(Role.OPS)
def create_endpoint() -> Response:
    """Register an endpoint: 201 with its ``secret``, shown this once."""
    body = EndpointCreate.model_validate(json_body())
    with db.transaction() as session:
        endpoint, secret = webhook_endpoints.create_endpoint(
            session,
            url=body.url,
            event_types=body.events,
            description=body.description,
            allow_private_networks=get_settings().webhook_allow_private_networks,
            actor=current_actor(),
        )
    return answer(
        WebhookEndpointCreated,
        With(endpoint, secret=secret),
        201,
        {"Location": f"/v1/webhook-endpoints/{endpoint.id}"},
    )


@blueprint.get("/webhook-endpoints")
@require_role(Role.OPS)
def list_endpoints() -> Response:
    """List endpoints, newest first."""
    params = query(ListQuery)
    with db.transaction() as session:
        rows, next_cursor = webhook_endpoints.list_endpoints(
            session, limit=params.limit, cursor=params.cursor
        )
    return page(WebhookEndpoint, rows, next_cursor)


@blueprint.get("/webhook-endpoints/<endpoint_id>")
@require_role(Role.OPS)
def get_endpoint(endpoint_id: str) -> Response:
    """Return one endpoint."""
    with db.transaction() as session:
        endpoint = webhook_endpoints.get_endpoint(session, _endpoint_id(endpoint_id))
    return answer(WebhookEndpoint, endpoint)


@blueprint.patch("/webhook-endpoints/<endpoint_id>")
@require_role(Role.OPS)
def update_endpoint(endpoint_id: str) -> Response:
    """Enable or disable an endpoint, or change its events or URL."""
    endpoint_uuid = _endpoint_id(endpoint_id)
    body = EndpointPatch.model_validate(json_body())
    with db.transaction() as session:
        endpoint = webhook_endpoints.update_endpoint(
            session,
            endpoint_uuid,
            status=body.status,
            event_types=body.events,
            url=body.url,
            allow_private_networks=get_settings().webhook_allow_private_networks,
            actor=current_actor(),
        )
    return answer(WebhookEndpoint, endpoint)


@blueprint.delete("/webhook-endpoints/<endpoint_id>")
@require_role(Role.OPS)
def delete_endpoint(endpoint_id: str) -> tuple[str, int]:
    """Delete an endpoint and its deliveries: 204."""
    endpoint_uuid = _endpoint_id(endpoint_id)
    with db.transaction() as session:
        webhook_endpoints.delete_endpoint(session, endpoint_uuid, actor=current_actor())
    return "", 204


@blueprint.get("/webhook-endpoints/<endpoint_id>/deliveries")
@require_role(Role.OPS)
def list_deliveries(endpoint_id: str) -> Response:
    """List an endpoint's deliveries, newest first, filtered by status."""
    endpoint_uuid = _endpoint_id(endpoint_id)
    params = query(DeliveryListQuery)
    with db.transaction() as session:
        rows, next_cursor = deliveries.list_deliveries(
            session, endpoint_uuid, status=params.status, limit=params.limit, cursor=params.cursor
        )
    return page(WebhookDelivery, [With(d, event_type=t) for d, t in rows], next_cursor)


@blueprint.post("/webhook-deliveries/<delivery_id>/retry")
@require_role(Role.OPS)
def retry_delivery(delivery_id: str) -> Response:
    """Deliver again now: 202 with the delivery, due at once."""
    delivery_uuid = path_id(delivery_id, not_found_code="webhook_delivery_not_found")
    with db.transaction() as session:
        delivery, event_type = deliveries.retry_delivery(
            session, delivery_uuid, actor=current_actor()
        )
    return answer(WebhookDelivery, With(delivery, event_type=event_type), 202)
