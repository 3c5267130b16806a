"""Rate limits per API key (flask-limiter, counted in Redis), failing open when Redis is down.

Every ``/v1`` request of an authenticated key counts against one limit
shared by all routes (flask-limiter's application limit, keyed by the API
key's id): ``TALLY_RATE_LIMIT_SERVICE`` or ``TALLY_RATE_LIMIT_OPS`` by the
key's role, in fixed windows. Over it, the answer is ``429 rate_limited``
(RFC 6585) as problem+json. Every limited answer carries the fields of the
IETF draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the window
ends), and a 429 ``Retry-After`` in seconds (RFC 9110 section 10.2.3).

A request counts 1, except on a view marked with :func:`costs`: a batch
(``POST /v1/transactions/batch``) counts its items, so a client pays the same
for a transaction whether it sends it alone or in a batch. To count them, the
batch's body is read (``api.edge.request_json``) before the check.

The check runs after authentication (a request without a valid key is a 401
and counts against nothing) and, a batch aside, before the edge reads the body. Requests
without a key (``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``,
``/docs``, ``/``) are not limited.

Redis down: flask-limiter's ``swallow_errors`` lets the request through, and
``_StorageErrors`` turns the library's log record into a counter
(``tally_rate_limit_storage_errors_total``) and a warning of Tally's own, at
most one per ``_WARNING_INTERVAL_SECONDS`` per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import structlog
from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from limits.storage import RedisStorage

from api.errors import problem
from shared.config import get_settings
from shared.metrics import RATE_LIMIT_STORAGE_ERRORS, RATE_LIMITED

#: Flask config key of a ``{"service": "...", "ops": "..."}`` override (tests).
LIMITS_CONFIG_KEY = "TALLY_RATE_LIMITS"
#: The prefix of the counters' Redis keys.
KEY_PREFIX = "tally-ratelimit"
_WARNING_INTERVAL_SECONDS = 5.0
# View function attribute set by ``costs``.
_COST_ATTRIBUTE = "tally_rate_limit_cost"

F = TypeVar("F", bound=Callable[..., Any])

_log = structlog.get_logger(__name__)


def costs(counter: Callable[[], int]) -> Callable[[F], F]:
    """Make each request of a view count ``counter()`` against its key's limit instead of 1.

    Args:
        counter: returns the current request's cost, at least 1; it must not
            raise (flask-limiter would take an error for a storage failure).
    """

    def mark(view: F) -> F:
        setattr(view, _COST_ATTRIBUTE, counter)
        return view

    return mark


def _request_cost() -> int:
    """Return what the current request counts against its key's limit (see :func:`costs`)."""
    view = current_app.view_functions.get(request.endpoint or "")
    counter = getattr(view, _COST_ATTRIBUTE, None)
    return 1 if counter is None else max(1, counter())


def install_rate_limits(app: Flask) -> Limiter | None:
    """Limit each API key's ``/v1`` requests by its role; return the limiter (None if disabled).

    Call it after registering authentication's ``before_request`` and before
    the edge's: flask-limiter checks in a ``before_request`` of its own, and
    Flask runs them in the order they were registered.
    """
    settings = get_settings()
    if not settings.rate_limit_enabled:
        return None
    by_role = app.config.get(LIMITS_CONFIG_KEY) or {
        "service": settings.rate_limit_service,
        "ops": settings.rate_limit_ops,
    }
    timeout_seconds = settings.broker_publish_timeout_seconds

    def limit_of_key() -> str:
        return str(by_role[str(getattr(g, "role", "service"))])

    limiter = Limiter(
        key_func=lambda: str(g.api_key_id),
        application_limits=[
            ApplicationLimit(
                limit_provider=limit_of_key,
                exempt_when=lambda: "api_key_id" not in g,
                cost=_request_cost,
            )
        ],
        storage_uri=settings.redis_url,
        storage_options={
            "socket_connect_timeout": timeout_seconds,  # type: ignore[dict-item]
            "socket_timeout": timeout_seconds,  # type: ignore[dict-item]
        },
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        # The headers are the draft's, written below; flask-limiter's Reset is a timestamp.
        headers_enabled=False,
        swallow_errors=True,
    )
    limiter.init_app(app)
    _install_storage_error_filter()
    app.after_request(lambda response: _add_headers(limiter, response))
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    return limiter


def _too_many_requests(error: RateLimitExceeded) -> Response:
    """Answer 429 ``rate_limited`` (RFC 6585 section 4) as problem+json."""
    RATE_LIMITED.labels(str(getattr(g, "role", "unknown"))).inc()
    return problem(
        "rate_limited",
        f"this API key is over its rate limit ({error.description}); "
        "retry after Retry-After seconds",
    )


def _add_headers(limiter: Limiter, response: Response) -> Response:
    """Add the draft's ``RateLimit-*`` fields, and ``Retry-After`` to a 429, to a limited answer."""
    current = limiter.current_limit
    if current is None:
        return response
    try:
        remaining, reset_seconds = _window(limiter, current)
    except Exception as error:  # Redis gone since the check: no headers, the answer stands
        _storage_error(error)
        return response
    response.headers["RateLimit-Limit"] = str(current.limit.amount)
    response.headers["RateLimit-Remaining"] = str(remaining)
    response.headers["RateLimit-Reset"] = str(reset_seconds)
    if response.status_code == 429:
        response.headers["Retry-After"] = str(max(1, reset_seconds))
    return response


def _window(limiter: Limiter, current: RequestLimit) -> tuple[int, int]:
    """Return the key's requests remaining and the seconds until its window resets.

    flask-limiter's ``RequestLimit.window`` asks Redis twice in a row (the
    count, then the key's TTL: limits' ``FixedWindowRateLimiter.get_window_stats``);
    this sends both in one pipeline, through the same storage and key, so a
    request costs two round trips to Redis (the hit, then this) instead of three.

    Raises:
        redis.RedisError: Redis did not answer.
    """
    storage = cast(RedisStorage, limiter.storage)
    key = storage.prefixed_key(current.key)
    pipeline = storage.get_connection(True).pipeline(transaction=False)
    count, ttl = pipeline.get(key).ttl(key).execute()
    # A TTL of -2 (key gone: the window just ended) or -1 reads as a fresh window.
    return max(0, current.limit.amount - int(count or 0)), max(0, int(ttl))


_last_warning = [0.0]
_warning_lock = threading.Lock()


def _storage_error(error: BaseException | None) -> None:
    """Count a rate-limit storage failure and warn, at most once per interval per process."""
    RATE_LIMIT_STORAGE_ERRORS.inc()
    now = time.monotonic()
    with _warning_lock:
        if now - _last_warning[0] < _WARNING_INTERVAL_SECONDS:
            return
        _last_warning[0] = now
    _log.warning(
        "rate_limit_storage_unavailable",
        error=str(error),
        detail="requests pass unlimited until Redis answers again",
    )


class _StorageErrors(logging.Filter):
    """Turn flask-limiter's swallowed storage errors into Tally's counter and warning.

    With ``swallow_errors``, flask-limiter logs "Failed to rate limit. Swallowing
    error" with a traceback on every request while Redis is down; this filter
    counts each, warns in Tally's own format, and drops the library's record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a swallowed-error record (handled here), True for any other."""
        message = str(record.msg)
        if not message.startswith("Failed to"):
            return True
        error: Any = record.exc_info[1] if record.exc_info else None
        _storage_error(error)
        return False


def _install_storage_error_filter() -> None:
    """Attach one ``_StorageErrors`` filter to flask-limiter's logger (idempotent)."""
    logger = logging.getLogger("flask-limiter")
    if not any(isinstance(f, _StorageErrors) for f in logger.filters):
        logger.addFilter(_StorageErrors())
