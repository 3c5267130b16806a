"""The audit log: who did which operator action to what, and when (``audit_events``).

Each ops service function that is given an ``actor`` appends one row through
:func:`record`, in the caller's database transaction: the row commits with
the action or not at all. Rows are never changed (a trigger rejects UPDATE,
DELETE and TRUNCATE, migration 0006).
"""

from __future__ import annotations

import enum
import getpass
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import AuditEvent
from shared.pagination import newest_first_page


class AuditAction(enum.StrEnum):
    """The operator actions recorded, named ``<resource>.<verb>``."""

    TRANSACTION_RETRY = "transaction.retry"
    TRANSACTION_BULK_RETRY = "transaction.bulk_retry"
    WALLET_FREEZE = "wallet.freeze"
    WALLET_UNFREEZE = "wallet.unfreeze"
    #: Details: ``overdraft_limit_minor`` (new) and ``previous_minor``.
    WALLET_OVERDRAFT_LIMIT = "wallet.overdraft_limit"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    RECONCILIATION_START = "reconciliation.start"
    WEBHOOK_ENDPOINT_CREATE = "webhook_endpoint.create"
    WEBHOOK_ENDPOINT_UPDATE = "webhook_endpoint.update"
    WEBHOOK_ENDPOINT_DELETE = "webhook_endpoint.delete"
    #: Tally disabled an endpoint whose attempts kept failing (actor ``system``).
    WEBHOOK_ENDPOINT_DISABLE = "webhook_endpoint.disable"
    WEBHOOK_DELIVERY_RETRY = "webhook_delivery.retry"


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key (its id and name), the CLI (the OS user) or Tally itself.

    Attributes:
        type: ``"api_key"``, ``"cli"`` or ``"system"``.
        name: the key's name, the OS user's login name, or the acting component.
        key_id: the API key's id; ``None`` for the CLI.
        request_id: the HTTP request's ``X-Request-Id``, when there is one.
    """

    type: str
    name: str
    key_id: uuid.UUID | None = None
    request_id: str | None = None

    @classmethod
    def api_key(cls, key_id: uuid.UUID, name: str, request_id: str | None = None) -> Actor:
        """Return the actor of a request authenticated with key ``key_id``."""
        return cls("api_key", name, key_id, request_id)

    @classmethod
    def system(cls, component: str) -> Actor:
        """Return Tally itself as the actor, naming the component (``webhook delivery``)."""
        return cls("system", component)

    @classmethod
    def cli(cls) -> Actor:
        """Return the actor of a ``tally`` command: ``cli`` and the OS user running it."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container without /etc/passwd entry)
            user = "unknown"
        return cls("cli", user)


def record(
    session: Session,
    actor: Actor,
    action: AuditAction | str,
    target_ids: Iterable[uuid.UUID],
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event in the session's transaction (the caller commits) and return it.

    Args:
        actor: who acts.
        action: an ``AuditAction`` (other features may record their own ``<resource>.<verb>``).
        target_ids: the ids the action touched, in the order it touched them.
        details: JSON-serialisable facts about the action (filters, new status).
    """
    event = AuditEvent(
        id=uuid.uuid4(),
        action=str(action),
        actor_type=actor.type,
        actor_key_id=actor.key_id,
        actor_name=actor.name,
        target_ids=list(target_ids),
        details=details or {},
        request_id=actor.request_id,
    )
    session.add(event)
    session.flush()
    return event


def url_without_secrets(url: str) -> str:
    """Return ``url`` without user info, query or fragment, where receivers put tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def list_events(
    session: Session,
    *,
    action: str | None,
    target_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[AuditEvent], str | None]:
    """Return a page of audit events, newest first, and the next page's cursor (or None).

    Args:
        action: only this action (``transaction.retry``, ...).
        target_id: only events that name this id among their targets.
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = select(AuditEvent)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if target_id is not None:
        query = query.where(AuditEvent.target_ids.contains([target_id]))  # GIN index
    return newest_first_page(
        session,
        query,
        created_at=AuditEvent.created_at,
        id_=AuditEvent.id,
        limit=limit,
        cursor=cursor,
    )
