"""API keys: created by the CLI, stored only as a SHA-256 hash, looked up per request."""

from __future__ import annotations

import enum
import hashlib
import secrets
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import ApiKey


class Role(enum.StrEnum):
    """What a key may do: ``ops`` may do everything ``service`` may, plus the ops calls."""

    SERVICE = "service"
    OPS = "ops"


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 of an API key secret (keys are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, *, role: Role, name: str) -> tuple[ApiKey, str]:
    """Create a key and return ``(row, secret)``; the secret is shown once and never stored."""
    secret = f"tally_{role.value}_{secrets.token_urlsafe(32)}"
    key = ApiKey(id=uuid.uuid4(), name=name, role=role.value, key_hash=hash_secret(secret))
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    """Return the live (not revoked) key whose secret is ``secret``, or None."""
    return session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_secret(secret), ApiKey.revoked_at.is_(None))
    )


def revoke_api_key(session: Session, key_id: uuid.UUID) -> bool:
    """Revoke a live key; return False if there is no live key with that id."""
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = func.now()
    session.flush()
    return True
