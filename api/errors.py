"""RFC 9457 problem+json errors, and the one table mapping machine codes to HTTP statuses."""

from __future__ import annotations

from typing import Any

import structlog
from flask import Flask, Response, json
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from shared.db import is_transient
from shared.ledger.errors import TallyError

_log = structlog.get_logger(__name__)

#: HTTP status for each machine code (docs/api-conventions.md, "Errors"). Codes not listed fall back by error class.
STATUS_BY_CODE: dict[str, int] = {
    "malformed_request": 400,
    "idempotency_key_missing": 400,
    "idempotency_key_invalid": 400,
    "invalid_cursor": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "wallet_not_found": 404,
    "balance_monitor_not_found": 404,
    "transaction_not_found": 404,
    "reconciliation_not_found": 404,
    "webhook_endpoint_not_found": 404,
    "webhook_delivery_not_found": 404,
    "webhook_endpoint_disabled": 409,
    "webhook_url_not_allowed": 422,
    "method_not_allowed": 405,
    "wallet_exists": 409,
    "not_retryable": 409,
    "hold_not_open": 409,
    "not_reversible": 409,
    "not_cancelable": 409,
    "system_wallet_immutable": 409,
    "overdraft_in_use": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_failed": 422,
    "invalid_amount": 422,
    "unknown_currency": 422,
    "currency_not_enabled": 422,
    "currency_mismatch": 422,
    "idempotency_key_reused": 422,
    "capture_exceeds_hold": 422,
    "reversal_exceeds_amount": 422,
    "rate_limited": 429,
    "service_unavailable": 503,
    "internal_error": 500,
}

#: The ``title`` of a problem of each status; the OpenAPI document's examples use it too.
TITLE_BY_STATUS: dict[int, str] = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(
    code: str,
    detail: str,
    *,
    status: int | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Return an ``application/problem+json`` response (RFC 9457) with a machine ``code``.

    Args:
        code: the machine code; its status comes from ``STATUS_BY_CODE`` unless given.
        detail: a human sentence about this occurrence.
        errors: per-field problems ``[{"field", "message"}]``.
    """
    return _problem_response(problem_json(code, detail, status=status, errors=errors), headers)


def _problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """Return the problem object ``body`` as an ``application/problem+json`` response."""
    response = Response(
        json.dumps(body), status=body["status"], mimetype="application/problem+json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def problem_json(
    code: str, detail: str, *, status: int | None = None, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """Return the RFC 9457 problem object of :func:`problem`, as a dict.

    Keys: ``type``, ``title``, ``status``, ``detail``, ``code`` and, when
    given, ``errors``. A batch item's refusal carries it in its result.
    """
    status = status or STATUS_BY_CODE.get(code, 400)
    body: dict[str, Any] = {
        # A relative URI reference (RFC 9457 section 3.1.1) into the API's own docs.
        "type": f"/docs/errors#{code}",
        "title": TITLE_BY_STATUS.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return body


def refusal_json(error: TallyError | ValidationError) -> dict[str, Any]:
    """Return the problem object a request refused by ``error`` answers (see the handlers below)."""
    if isinstance(error, ValidationError):
        return problem_json(
            "validation_failed", "the request body is not valid", errors=pydantic_errors(error)
        )
    return problem_json(error.code, error.detail, errors=error.errors)


#: Machine code of each werkzeug HTTP error (routing, werkzeug's own body limit).
_CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

_UNION_TAGS = {"deposit", "withdrawal", "transfer", "hold", "group"}


def pydantic_errors(error: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic's errors into ``[{"field", "message"}]``, fields dotted (``legs.0.amount``)."""
    out = []
    for item in error.errors(include_url=False, include_input=False):
        loc = list(item["loc"])
        if loc and loc[0] in _UNION_TAGS:  # the discriminated union's tag is not a field
            loc = loc[1:]
        field = ".".join(str(part) for part in loc) or "body"
        if item["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            field = "type"
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        out.append({"field": field, "message": message})
    return out


def _retry_later(reason: str) -> Response:
    """Answer ``503 service_unavailable`` with ``Retry-After: 1`` for a passing outage.

    Args:
        reason: what was unavailable, the start of the problem's ``detail``.
    """
    return problem(
        "service_unavailable",
        f"{reason}; nothing was recorded, retry with the same Idempotency-Key",
        headers={"Retry-After": "1"},
    )


def register_error_handlers(app: Flask) -> None:
    """Render every error as problem+json: Tally errors, HTTP errors, database outages, bugs."""

    @app.errorhandler(TallyError)
    @app.errorhandler(ValidationError)
    def _refused(error: TallyError | ValidationError) -> Response:
        return _problem_response(refusal_json(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _CODE_BY_HTTP_STATUS.get(status, "internal_error")
        return problem(
            code, error.description or TITLE_BY_STATUS.get(status, "Error"), status=status
        )

    @app.errorhandler(DBAPIError)
    def _database_error(error: DBAPIError) -> Response:
        if is_transient(error):
            _log.warning("database_unavailable", error=str(error.orig))
            return _retry_later("the database is unavailable")
        _log.error("database_error", exc_info=True)
        return problem("internal_error", "an internal error occurred", status=500)

    @app.errorhandler(PoolTimeout)
    def _pool_exhausted(error: PoolTimeout) -> Response:
        # Every pooled connection is busy (SQLAlchemy QueuePool's pool_timeout ran out):
        # nothing was read or written, so the client may retry as after an outage.
        _log.warning("database_pool_exhausted", error=str(error))
        return _retry_later("every database connection is busy")

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        _log.error("unhandled_error", exc_info=True)
        return problem("internal_error", "an internal error occurred", status=500)
