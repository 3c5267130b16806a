"""API keys: created by the CLI, stored only as a SHA-256 hash, looked up per request.

A secret is ``tally_<role>_`` and 32 random bytes from ``secrets`` (256 bits,
URL-safe base64), so a fast unsalted hash is enough: there is no dictionary
to try. Lookups go by the hash; the stored hash is then compared with
``hmac.compare_digest``, whose time does not depend on where two values differ.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import ApiKey
from shared.services import audit


class Role(enum.StrEnum):
    """What a key may do: ``ops`` may do everything ``service`` may, plus the ops calls."""

    SERVICE = "service"
    OPS = "ops"


#: Random bytes in a secret (256 bits).
SECRET_BYTES = 32


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 of an API key secret (keys are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    session: Session, *, role: Role, name: str, actor: audit.Actor | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return ``(row, secret)``; the secret is shown once and never stored.

    Args:
        actor: the operator; when given, ``api_key.create`` is appended to the
            audit log in the same transaction (the secret is not recorded).
    """
    secret = f"tally_{role.value}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key = ApiKey(id=uuid.uuid4(), name=name, role=role.value, key_hash=hash_secret(secret))
    session.add(key)
    session.flush()
    if actor is not None:
        details = {"role": role.value, "name": name}
        audit.record(session, actor, audit.AuditAction.API_KEY_CREATE, [key.id], details)
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """Return the live (not revoked) key whose secret is ``secret``, or None."""
    digest = hash_secret(secret)
    key = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    )
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    return key


def list_api_keys(session: Session, *, include_revoked: bool = False) -> Sequence[ApiKey]:
    """Return the keys, oldest first; revoked ones only when ``include_revoked``."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return session.scalars(query).all()


def revoke_api_key(
    session: Session, key_id: uuid.UUID, *, actor: audit.Actor | None = None
) -> bool:
    """Revoke a live key; return False if there is no live key with that id.

    API processes cache a known key for at most ``api.auth.KNOWN_KEY_TTL_SECONDS``,
    so the key stops working everywhere within that time after the commit.

    Args:
        actor: the operator; when given, ``api_key.revoke`` is appended to the
            audit log in the same transaction.
    """
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = func.now()
    session.flush()
    if actor is not None:
        audit.record(session, actor, audit.AuditAction.API_KEY_REVOKE, [key.id], {"name": key.name})
    return True
