"""Error types of the ledger core; each carries a machine code.

Codes are snake_case and phrased as the rule that failed (TigerBeetle's result
codes are the model). The HTTP mapping of each code lives in one table in
``api/errors.py``.
"""

from __future__ import annotations

from enum import StrEnum


class FailureCode(StrEnum):
    """Why a transaction ended ``failed`` (the ``failure_code`` field of the API)."""

    INSUFFICIENT_FUNDS = "insufficient_funds"
    WALLET_FROZEN = "wallet_frozen"
    WALLET_NOT_FOUND = "wallet_not_found"
    CURRENCY_MISMATCH = "currency_mismatch"
    RETRIES_EXHAUSTED = "retries_exhausted"
    HOLD_EXPIRED = "hold_expired"
    HOLD_NOT_OPEN = "hold_not_open"
    CAPTURE_EXCEEDS_HOLD = "capture_exceeds_hold"
    REVERSAL_EXCEEDS_AMOUNT = "reversal_exceeds_amount"


class TallyError(Exception):
    """Base of every error that carries a machine code.

    Attributes:
        code: the machine code (``str``), rendered as ``code`` in problem+json.
        detail: a human sentence saying what went wrong.
        errors: per-field problems, ``[{"field": str, "message": str}]``.
    """

    code: str = "tally_error"

    def __init__(
        self, detail: str, *, code: str | None = None, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = errors or []


class InvalidAmount(TallyError):
    """An amount string is not a valid positive amount for its currency."""

    code = "invalid_amount"


class UnknownCurrency(TallyError):
    """A currency code is not in ISO 4217 (or has no minor unit)."""

    code = "unknown_currency"


class ValidationFailed(TallyError):
    """A request failed synchronous validation; ``errors`` names each field."""

    code = "validation_failed"


class NotFound(TallyError):
    """A referenced resource does not exist (``wallet_not_found``, ...)."""

    code = "not_found"


class Conflict(TallyError):
    """The request conflicts with the resource's state (``wallet_exists``, ``not_retryable``)."""

    code = "conflict"


class IdempotencyKeyReused(TallyError):
    """An Idempotency-Key was sent again with a different request body."""

    code = "idempotency_key_reused"
