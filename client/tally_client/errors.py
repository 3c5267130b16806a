"""Exceptions of the client: one per kind of answer, each carrying the problem's fields.

Every error answer of the API is RFC 9457 ``application/problem+json`` with a
machine ``code`` (docs/api-conventions.md, "Errors"); :class:`APIError` keeps
``status``, ``code``, ``detail``, ``title``, ``type`` and the field ``errors``.
Branch on ``code``, not on ``detail``, which is written for humans.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from tally_client.models import FieldError, Problem, Transaction


class TallyError(Exception):
    """Base of every exception this package raises."""


class TallyConnectionError(TallyError):
    """The API could not be reached (or stopped answering) and the retries ran out.

    ``__cause__`` is the last httpx transport error.
    """


class APIError(TallyError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status (400..599).
        code: the machine code, e.g. ``wallet_not_found``; ``""`` if the body was no problem.
        detail: a sentence for humans.
        errors: the field errors (``field`` dotted, ``message``), empty if none.
        problem: the whole parsed problem.
        headers: the answer's headers (``Retry-After``, ``RateLimit-*``).
    """

    def __init__(self, problem: Problem, headers: httpx.Headers | None = None) -> None:
        self.problem = problem
        self.status = problem.status
        self.code = problem.code
        self.detail = problem.detail
        self.title = problem.title
        self.type = problem.type
        self.errors: list[FieldError] = list(problem.errors or [])
        self.headers = headers or httpx.Headers()
        fields = "".join(f"; {e.field}: {e.message}" for e in self.errors)
        super().__init__(f"{self.status} {self.code}: {self.detail}{fields}")


class BadRequestError(APIError):
    """400: an unreadable body or query, a missing or invalid idempotency key, a bad cursor."""


class AuthenticationError(APIError):
    """401 ``unauthenticated``: no key, or an unknown or revoked one."""


class PermissionDeniedError(APIError):
    """403 ``forbidden``: the key's role may not make this call (an ``ops`` call)."""


class NotFoundError(APIError):
    """404: no such wallet, transaction, run, endpoint or route."""


class ConflictError(APIError):
    """409: ``wallet_exists``, ``not_retryable``, ``hold_not_open``, ``not_reversible``, ..."""


class UnprocessableError(APIError):
    """422: validation failed (see ``errors``), ``currency_mismatch``, ``idempotency_key_reused``, ..."""


class RateLimitedError(APIError):
    """429 ``rate_limited``, raised once the retries ran out."""


class ServerError(APIError):
    """5xx: ``internal_error``, or ``service_unavailable`` once the retries ran out."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def error_for(response: httpx.Response) -> APIError:
    """Return the exception for an error ``response``: its problem, or one made from its status."""
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    if isinstance(body, dict) and "status" in body:
        problem = Problem.model_validate(body)
    else:
        problem = Problem(status=response.status_code, detail=response.text[:500])
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else APIError
    return kind(problem, response.headers)


class WaitTimeoutError(TallyError, TimeoutError):
    """``transactions.wait`` reached its timeout; ``transaction`` is the last one read (pending)."""

    def __init__(self, transaction: Transaction, timeout_seconds: float) -> None:
        self.transaction = transaction
        super().__init__(
            f"transaction {transaction.id} still {transaction.status} after {timeout_seconds} s"
        )


class WebhookVerificationError(TallyError):
    """A webhook's signature, timestamp or headers did not verify: do not trust its body."""
