"""Request ids and request metrics for every request, whatever its route or outcome.

``install_observability`` adds a ``before_request`` hook that runs first and an
``after_request`` hook that runs for every response, error answers included:

- **Request id.** The client's ``X-Request-Id`` if it is 1..128 visible ASCII
  characters, else a new UUID; bound with ``structlog.contextvars`` for the
  request's log lines (structlog docs, "Context Variables"), stored with the
  transactions the request submits (so the worker logs it too), and echoed in
  the response's ``X-Request-Id``.
- **Access log.** One structured line per request (``request``: method, route
  template, status, duration, request id) replaces the server's plain-text
  access log (``tally serve web`` runs uvicorn with ``--no-access-log``).
- **Duration.** ``tally_http_request_duration_seconds`` by method, route
  template (``request.url_rule.rule``, e.g. ``/v1/transactions/<transaction_id>``,
  or ``unmatched`` for a 404 that matched no rule) and status code: a label set
  bounded by the app's routes, never by ids in paths (Prometheus docs,
  "Metric and label naming").
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from flask import Flask, Response, g, request

from shared.metrics import HTTP_REQUEST_DURATION

_log = structlog.get_logger("tally.access")

#: The header that carries a request's id in and out.
REQUEST_ID_HEADER = "X-Request-Id"
#: What a client's request id may be: 1..128 visible ASCII characters (as an
#: Idempotency-Key, shorter); anything else is replaced, never echoed.
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")


def install_observability(app: Flask) -> None:
    """Give every request of ``app`` a request id and time it into the request histogram.

    Call it before any other ``before_request`` hook is registered, so that
    requests refused early (401, 413) have an id and are counted too.
    """
    app.before_request(_begin)
    app.after_request(_finish)


def request_id() -> str | None:
    """Return the current request's id, or None outside a request that went through ``_begin``."""
    return g.get("request_id")


def _begin() -> None:
    """Bind the request id for the request's log lines and note its start time."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = sent if _REQUEST_ID_RE.fullmatch(sent) else str(uuid.uuid4())
    g.request_started = time.perf_counter()
    # A pool thread serves many requests: drop what the last one bound.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=g.request_id)


def _finish(response: Response) -> Response:
    """Echo the request id, observe the request's duration and log its access line."""
    started = g.get("request_started")
    if started is not None:
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        duration_seconds = time.perf_counter() - started
        HTTP_REQUEST_DURATION.labels(request.method, route, str(response.status_code)).observe(
            duration_seconds
        )
        _log.info(
            "request",
            method=request.method,
            route=route,
            status=response.status_code,
            duration_ms=round(duration_seconds * 1000, 2),
        )
    if "request_id" in g:
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response
