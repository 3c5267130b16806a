"""Rate limits per API key, counted in each API process's memory (limits).

Every ``/v1`` request of an authenticated key counts against one limit
shared by all routes, keyed by the API key's id: ``TALLY_RATE_LIMIT_SERVICE``
or ``TALLY_RATE_LIMIT_OPS`` by the key's role, in fixed windows. Over it,
the answer is ``429 rate_limited`` (RFC 6585) as problem+json. Every
limited answer carries the fields of the IETF
draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the window
ends), and a 429 ``Retry-After`` in seconds (RFC 9110 section 10.2.3).

**Counted per process, limited in total.** The counters live in each API
process (limits' ``MemoryStorage``), so a request costs no round trip to
Redis; each process allows its share of the configured limit,
``ceil(limit / TALLY_RATE_LIMIT_PROCESSES)`` (default: ``TALLY_WEB_WORKERS``,
the processes of one host). Whatever the processes a key's requests reach,
it never gets more than the configured limit in a window; when its
requests are spread over the processes (the kernel spreads connections
over a host's workers; a load balancer over hosts) it gets all of it. With
several hosts, set ``TALLY_RATE_LIMIT_PROCESSES`` to the API processes of
all of them. This is the local rate limit of proxies such as Envoy's
``local_ratelimit``; it trades a key's exact total, when its traffic is
uneven over the processes, for no shared state on the request path
(docs/api-conventions.md, "Rate limits").

A request counts 1, except on a view marked with :func:`costs`: a batch
(``POST /v1/transactions/batch``) counts its items, so a client pays the same
for a transaction whether it sends it alone or in a batch. To count them, the
batch's body is read (``api.edge.request_json``) before the check.

The check runs after authentication (a request without a valid key is a 401
and counts against nothing) and, a batch aside, before the edge reads the body. Requests
without a key (``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``,
``/docs``, ``/``) are not limited.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, WindowStats, parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from api.errors import problem
from shared.config import get_settings
from shared.metrics import RATE_LIMITED

#: Flask config key of a ``{"service": "...", "ops": "..."}`` override (tests).
LIMITS_CONFIG_KEY = "TALLY_RATE_LIMITS"
#: Flask config key of a ``TALLY_RATE_LIMIT_PROCESSES`` override (tests).
PROCESSES_CONFIG_KEY = "TALLY_RATE_LIMIT_PROCESSES"
# View function attribute set by ``costs``.
_COST_ATTRIBUTE = "tally_rate_limit_cost"

F = TypeVar("F", bound=Callable[..., Any])


#: The least interval between two sweeps of a storage's expired counters, in seconds.
SWEEP_INTERVAL_SECONDS = 1.0


class SweptMemoryStorage(MemoryStorage):
    """limits' ``MemoryStorage`` that drops expired counters inline, never in a thread (``tally-memory://``).

    limits 5.8.0 frees expired counters in a ``threading.Timer`` of 10 ms that
    each count restarts once the last one has run: below about a hundred
    requests a second, every request started a thread (docs/benchmarks.md,
    series 12), and two threads that found it stopped could start the same
    timer twice, whose "threads can only be started once" answered 500
    (limits' issue #26, fixed by its pull request #352, in no release yet).
    Here a count sweeps the expired counters itself, at most once every
    :data:`SWEEP_INTERVAL_SECONDS`, and no timer is restarted. A fixed
    window's count stays exact without the sweep: ``MemoryStorage.get``
    drops an expired counter before reading it. The sweep only frees the
    memory of keys no longer counted (an API key revoked or idle).
    """

    STORAGE_SCHEME = ["tally-memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str):
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        with self._sweep_lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + SWEEP_INTERVAL_SECONDS
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def costs(counter: Callable[[], int]) -> Callable[[F], F]:
    """Make each request of a view count ``counter()`` against its key's limit instead of 1.

    Args:
        counter: returns the current request's cost, at least 1; it must not
            raise (the request would answer 500 before its own checks ran).
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


def share_of(limit: str, processes: int) -> str:
    """Return one process's share of ``limit``: each item's amount divided, rounded up.

    Args:
        limit: limits' notation, e.g. ``"20000/second"`` or ``"60 per minute; 1000/hour"``.
        processes: the API processes that share the key's traffic, at least 1.

    Returns:
        The same windows with ``ceil(amount / processes)`` each, e.g. ``"10000 per 1 second"``.
    """
    return "; ".join(
        f"{math.ceil(item.amount / processes)} per {item.multiples} {item.GRANULARITY.name}"
        for item in parse_many(limit)
    )


def install_rate_limits(app: Flask) -> None:
    """Limit each API key's ``/v1`` requests by its role; nothing when rate limits are disabled.

    Call it after registering authentication's ``before_request`` and before
    the edge's: the check is a ``before_request`` of its own, and Flask runs
    them in the order they were registered.
    """
    settings = get_settings()
    if not settings.rate_limit_enabled:
        return
    configured = app.config.get(LIMITS_CONFIG_KEY) or {
        "service": settings.rate_limit_service,
        "ops": settings.rate_limit_ops,
    }
    processes = app.config.get(PROCESSES_CONFIG_KEY) or settings.rate_limit_process_count
    limits = RateLimits(
        {role: parse_many(share_of(limit, processes)) for role, limit in configured.items()}
    )
    app.before_request(limits.check)
    app.after_request(limits.add_headers)


class RateLimits:
    """Count each request of a known key against its role's limits, in fixed windows (limits).

    limits' ``FixedWindowRateLimiter`` over :class:`SweptMemoryStorage` does
    the counting. The Flask side is these two hooks rather than flask-limiter,
    whose generality (per-route, per-blueprint and exempt limits, resolved on
    every request) cost 300-600 µs of CPU per request, against none measurable for
    the same count through limits alone (docs/benchmarks.md, series 10).

    Args:
        by_role: each role's limits (limits' items, this process's share).
    """

    def __init__(self, by_role: dict[str, list[RateLimitItem]]) -> None:
        self.by_role = by_role
        self.limiter = FixedWindowRateLimiter(SweptMemoryStorage())

    def check(self) -> Response | None:
        """Count the request against each of its key's limits; answer 429 if one is spent.

        Requests without a known key (401s, ``/healthz`` and the other
        unauthenticated routes) count against nothing; a known key has its
        ``g.role`` too (``api.auth.load_api_key``). The limit with the
        fewest requests left is kept in ``g`` for :meth:`add_headers`.
        """
        if "api_key_id" not in g:
            return None
        key = str(g.api_key_id)
        cost = _request_cost()
        tightest: tuple[RateLimitItem, WindowStats] | None = None
        for item in self.by_role[g.role]:
            allowed = self.limiter.hit(item, key, cost=cost)
            stats = self.limiter.get_window_stats(item, key)
            if not allowed:
                g.rate_limit = (item, stats)
                return _too_many_requests(item)
            if tightest is None or stats.remaining < tightest[1].remaining:
                tightest = (item, stats)
        g.rate_limit = tightest
        return None

    def add_headers(self, response: Response) -> Response:
        """Add the draft's ``RateLimit-*`` fields, and ``Retry-After`` to a 429, to a limited answer."""
        counted = g.get("rate_limit")
        if counted is None:
            return response
        item, stats = counted
        reset_seconds = max(0, math.ceil(stats.reset_time - time.time()))
        response.headers["RateLimit-Limit"] = str(item.amount)
        response.headers["RateLimit-Remaining"] = str(max(0, stats.remaining))
        response.headers["RateLimit-Reset"] = str(reset_seconds)
        if response.status_code == 429:
            response.headers["Retry-After"] = str(max(1, reset_seconds))
        return response


def _too_many_requests(item: RateLimitItem) -> Response:
    """Answer 429 ``rate_limited`` (RFC 6585 section 4) as problem+json."""
    RATE_LIMITED.labels(g.role).inc()
    return problem(
        "rate_limited",
        f"this API key is over its rate limit ({item}); retry after Retry-After seconds",
    )
