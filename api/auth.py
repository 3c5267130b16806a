"""Bearer-key authentication and role checks for every ``/v1`` request."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cachetools import TTLCache
from flask import g, request

from shared import db
from shared.ledger.errors import TallyError
from shared.services.api_keys import Role, authenticate, hash_secret
from shared.services.audit import Actor

F = TypeVar("F", bound=Callable[..., Any])

#: How long an API process trusts a key it has looked up, in seconds. A revoked
#: key keeps working in a process for at most this long after its revocation
#: commits (docs/api-conventions.md, "Keys and roles"); the cache still spares
#: all but one database round trip per key per second and process.
KNOWN_KEY_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class KnownKey:
    """A live key as the API process remembers it: id, role and name (never its secret)."""

    id: uuid.UUID
    role: Role
    name: str


#: Known keys by the SHA-256 of their secret, so no secret is kept in memory
#: longer than its request.
_known_keys: TTLCache[str, KnownKey] = TTLCache(maxsize=10_000, ttl=KNOWN_KEY_TTL_SECONDS)
_known_keys_lock = threading.Lock()

#: The longest ``X-Request-Id`` recorded in the audit log, in characters.
REQUEST_ID_CHARS_MAX = 128


class Unauthenticated(TallyError):
    """No key, or a key Tally does not know (401)."""

    code = "unauthenticated"


class Forbidden(TallyError):
    """A known key whose role may not make this call (403)."""

    code = "forbidden"


def load_api_key() -> None:
    """Authenticate the request's ``Authorization: Bearer`` key into ``g.api_key_id``,
    ``g.role`` and ``g.api_key_name``.

    Raises:
        Unauthenticated: the header is missing, malformed, or names no live key.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send an API key as 'Authorization: Bearer <key>'")
    secret = secret.strip()
    digest = hash_secret(secret)
    with _known_keys_lock:
        known = _known_keys.get(digest)
    if known is None:
        with db.transaction() as session:
            key = authenticate(session, secret)
            if key is None:
                raise Unauthenticated("the API key is not valid")
            known = KnownKey(key.id, Role(key.role), key.name)
        with _known_keys_lock:
            _known_keys[digest] = known
    g.api_key_id, g.role, g.api_key_name = known.id, known.role, known.name


def current_actor() -> Actor:
    """Return the audit actor of the current request: its key, and its request id if any.

    The request id is ``g.request_id`` when the app assigned one, else the
    client's ``X-Request-Id`` header (at most ``REQUEST_ID_CHARS_MAX`` characters kept).
    """
    request_id = getattr(g, "request_id", None) or request.headers.get("X-Request-Id")
    if request_id is not None:
        request_id = str(request_id)[:REQUEST_ID_CHARS_MAX]
    return Actor.api_key(g.api_key_id, g.api_key_name, request_id)


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
