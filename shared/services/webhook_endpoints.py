"""Webhook endpoints (ops): register with a secret shown once, list, change, delete.

The secret is ``whsec_`` + base64 of 32 random bytes (the Standard Webhooks
specification's format, 24 to 64 bytes). Signing needs it as issued, so it
cannot be hashed like an API key: it is stored as is, returned once by
:func:`create_endpoint`, and never rendered, logged or copied into a delivery
afterwards (docs/webhooks.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.ledger.errors import NotFound, ValidationFailed
from shared.models import EVENT_TYPES, WebhookEndpoint
from shared.pagination import newest_first_page
from shared.services import audit
from shared.services.webhook_sender import (
    DestinationNotAllowed,
    UnsendableUrl,
    check_destination,
    receiver_url,
)


def endpoint_not_found(endpoint_id: uuid.UUID) -> NotFound:
    """Return the ``webhook_endpoint_not_found`` error for ``endpoint_id``."""
    return NotFound(
        f"webhook endpoint {endpoint_id} does not exist", code="webhook_endpoint_not_found"
    )


def new_secret() -> str:
    """Return a new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str, *, allow_private_networks: bool) -> None:
    """Refuse a receiver URL that cannot be sent to, or whose host is on a non-public address.

    What can be sent to is ``webhook_sender.receiver_url``'s rule: http(s), a
    host that IDNA encodes into DNS labels of 1 to 63 octets, a port in range.
    A host that does not resolve now is accepted (its DNS may come later);
    every delivery checks again.

    Raises:
        ValidationFailed: ``validation_failed`` or ``webhook_url_not_allowed``, field ``url``.
    """
    try:
        receiver_url(url)
    except UnsendableUrl as error:
        raise ValidationFailed(
            f"url cannot be sent to: {error}", errors=[{"field": "url", "message": str(error)}]
        ) from None
    try:
        check_destination(url, allow_private_networks=allow_private_networks)
    except DestinationNotAllowed as error:
        if "does not resolve" in str(error):
            return
        raise ValidationFailed(
            str(error),
            code="webhook_url_not_allowed",
            errors=[{"field": "url", "message": "not a public address"}],
        ) from None


def create_endpoint(
    session: Session,
    *,
    url: str,
    event_types: Sequence[str] | None,
    description: str | None,
    allow_private_networks: bool,
    actor: audit.Actor | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an enabled endpoint; return it and its secret (the only time it is given out).

    Args:
        event_types: the event types to deliver (docs/api.md, "Webhooks"); None: all of them.
        actor: the operator; when given, ``webhook_endpoint.create`` is appended
            to the audit log in the same transaction (never the secret).

    Raises:
        ValidationFailed: see :func:`check_url`.
    """
    check_url(url, allow_private_networks=allow_private_networks)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        url=url,
        event_types=list(event_types) if event_types is not None else list(EVENT_TYPES),
        description=description,
        secret=secret,
    )
    session.add(endpoint)
    session.flush()
    session.refresh(endpoint)
    if actor is not None:
        details = {"url": audit.url_without_secrets(url), "events": endpoint.event_types}
        audit.record(
            session, actor, audit.AuditAction.WEBHOOK_ENDPOINT_CREATE, [endpoint.id], details
        )
    return endpoint, secret


def get_endpoint(session: Session, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Return endpoint ``endpoint_id``.

    Raises:
        NotFound: ``webhook_endpoint_not_found``.
    """
    endpoint = session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
    if endpoint is None:
        raise endpoint_not_found(endpoint_id)
    return endpoint


def list_endpoints(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[Sequence[WebhookEndpoint], str | None]:
    """Return a page of endpoints, newest first, and the next page's cursor (or None).

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = select(WebhookEndpoint)
    return newest_first_page(
        session,
        query,
        created_at=WebhookEndpoint.created_at,
        id_=WebhookEndpoint.id,
        limit=limit,
        cursor=cursor,
    )


def update_endpoint(
    session: Session,
    endpoint_id: uuid.UUID,
    *,
    status: str | None,
    event_types: Sequence[str] | None,
    url: str | None,
    allow_private_networks: bool,
    actor: audit.Actor | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's status, event types or URL; return it.

    ``actor``, when given, appends ``webhook_endpoint.update`` to the audit log
    with the fields sent, in the same transaction.

    Enabling it forgets its failures (the count, the pause and the disable
    clock start again); its pending deliveries are then sent by the delivery sweep.

    Raises:
        NotFound: ``webhook_endpoint_not_found``.
        ValidationFailed: see :func:`check_url`.
    """
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update={"key_share": True})
    if endpoint is None:
        raise endpoint_not_found(endpoint_id)
    if url is not None:
        check_url(url, allow_private_networks=allow_private_networks)
        endpoint.url = url
    if event_types is not None:
        endpoint.event_types = list(event_types)
    if status is not None:
        if status == "enabled" and endpoint.status != "enabled":
            endpoint.failing_since = None
            endpoint.consecutive_failures = 0
            endpoint.paused_until = None
            endpoint.disabled_reason = None
        elif status == "disabled" and endpoint.status != "disabled":
            endpoint.disabled_reason = "disabled by an operator"
        endpoint.status = status
    endpoint.updated_at = session.scalar(select(func.now())) or dt.datetime.now(dt.UTC)
    session.flush()
    if actor is not None:
        changes: dict[str, object] = {"status": status, "events": event_types}
        changes["url"] = None if url is None else audit.url_without_secrets(url)
        details = {name: value for name, value in changes.items() if value is not None}
        audit.record(
            session, actor, audit.AuditAction.WEBHOOK_ENDPOINT_UPDATE, [endpoint_id], details
        )
    return endpoint


def delete_endpoint(
    session: Session, endpoint_id: uuid.UUID, *, actor: audit.Actor | None = None
) -> None:
    """Delete an endpoint and its deliveries (``ON DELETE CASCADE``).

    ``actor``, when given, appends ``webhook_endpoint.delete`` to the audit log.

    Raises:
        NotFound: ``webhook_endpoint_not_found``.
    """
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise endpoint_not_found(endpoint_id)
    session.delete(endpoint)
    session.flush()
    if actor is not None:
        audit.record(session, actor, audit.AuditAction.WEBHOOK_ENDPOINT_DELETE, [endpoint_id])
