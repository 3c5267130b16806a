"""Bearer-key authentication and role checks for every ``/v1`` request."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from cachetools import TTLCache
from flask import g, request

from shared import db
from shared.ledger.errors import TallyError
from shared.services.api_keys import Role, authenticate

F = TypeVar("F", bound=Callable[..., Any])

#: Known keys by secret, for 30 s: saves a database round trip on every request.
#: A revoked key may therefore work for up to 30 s more (docs/api-conventions.md).
_known_keys: TTLCache[str, tuple[uuid.UUID, Role]] = TTLCache(maxsize=10_000, ttl=30)
_known_keys_lock = threading.Lock()


class Unauthenticated(TallyError):
    """No key, or a key Tally does not know (401)."""

    code = "unauthenticated"


class Forbidden(TallyError):
    """A known key whose role may not make this call (403)."""

    code = "forbidden"


def load_api_key() -> None:
    """Authenticate the request's ``Authorization: Bearer`` key into ``g.api_key_id``/``g.role``.

    Raises:
        Unauthenticated: the header is missing, malformed, or names no live key.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    secret = secret.strip()
    with _known_keys_lock:
        known = _known_keys.get(secret)
    if known is None:
        with db.transaction() as session:
            key = authenticate(session, secret)
            if key is None:
                raise Unauthenticated("the API key is not valid")
            known = (key.id, Role(key.role))
        with _known_keys_lock:
            _known_keys[secret] = known
    g.api_key_id, g.role = known


def require_role(role: Role) -> Callable[[F], F]:
    """Decorate a view so that only keys with ``role`` (ops includes service) may call it.

    Raises:
        Forbidden: the key's role is lower than ``role``.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if role is Role.OPS and g.role is not Role.OPS:
                raise Forbidden("this call needs an ops key")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
