"""Response schemas (pydantic) of the API, for its OpenAPI 3.1 document.

The routes render with ``api.render`` and ``shared.rendering`` (plain dicts,
no validation on the hot path); these models describe what those renderings
produce, field for field, and forbid any other field, so the schemathesis run
(tests/contract) fails when a rendering and its schema drift apart. Each model
carries an example, which the document shows with every response.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: A decimal amount in major units as docs/api.md ("Conventions") renders it: ``"10.50"``, ``"1200"``, ``"-3.00"``
#: (only a system wallet's balance is negative).
Amount = Annotated[str, StringConstraints(pattern=r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Timestamp = Annotated[dt.datetime, Field(description="RFC 3339, UTC, with Z.")]

_ID = "7d1f7c3e-1b7a-4c55-9a57-0c1e2f3a4b5c"
_OTHER_ID = "0b9e8d7c-6f5a-4e3d-8c2b-1a0f9e8d7c6b"
_SYSTEM_ID = "5f0c3b2a-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
_AT = "2026-11-22T10:00:00.000000Z"


def _closed(example: dict[str, Any]) -> ConfigDict:
    """Return a model config that forbids unknown fields and carries ``example``."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


WALLET_EXAMPLE = {
    "id": _ID, "owner_ref": "+6591234567", "currency": "SGD", "balance": "100.00",
    "available_balance": "80.00", "held_balance": "20.00", "status": "active",
    "is_system": False, "created_at": _AT, "updated_at": _AT,
}  # fmt: skip


class Wallet(BaseModel):
    """A wallet: one owner (none for a system wallet), one currency, its balances."""

    model_config = _closed(WALLET_EXAMPLE)

    id: uuid.UUID
    owner_ref: str | None
    currency: Currency
    balance: Amount
    available_balance: Amount
    held_balance: Amount
    status: Literal["active", "frozen"]
    is_system: bool
    created_at: Timestamp
    updated_at: Timestamp


ENTRY_EXAMPLE = {
    "id": "42", "wallet_id": _ID, "transaction_id": _OTHER_ID, "transaction_type": "transfer",
    "direction": "debit", "amount": "15.00", "balance_after": "85.00", "sequence": 7,
    "created_at": _AT,
}  # fmt: skip


class LedgerEntry(BaseModel):
    """One append-only ledger entry of a wallet; ``sequence`` counts from 1 with no gap."""

    model_config = _closed(ENTRY_EXAMPLE)

    id: Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]
    wallet_id: uuid.UUID
    transaction_id: uuid.UUID
    transaction_type: Literal[
        "deposit", "withdrawal", "transfer", "hold", "group", "capture", "void", "expiry"
    ]
    direction: Literal["debit", "credit"]
    amount: Amount
    balance_after: Amount
    sequence: Annotated[int, Field(ge=1)]
    created_at: Timestamp


class Leg(BaseModel):
    """One leg of a group: ``amount`` of ``currency`` from source to destination."""

    model_config = ConfigDict(extra="forbid")

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount: Amount
    currency: Currency


TransactionType = Literal[
    "deposit", "withdrawal", "transfer", "hold", "group", "capture", "void", "expiry"
]
TransactionStatus = Literal["pending", "held", "completed", "failed", "voided", "expired"]

TRANSACTION_EXAMPLE = {
    "id": _OTHER_ID, "type": "transfer", "status": "pending", "amount": "15.00",
    "currency": "SGD", "source_wallet_id": _ID, "destination_wallet_id": _SYSTEM_ID,
    "description": None, "metadata": {}, "failure_code": None, "failure_message": None,
    "attempts": 0, "created_at": _AT, "updated_at": _AT, "completed_at": None,
}  # fmt: skip


class Transaction(BaseModel):
    """A transaction. A group has ``legs`` in place of ``amount``, ``currency`` and the
    wallet ids; a capture, void or expiry names its hold in ``hold_id``; a hold has
    ``expires_at``."""

    model_config = _closed(TRANSACTION_EXAMPLE)

    id: uuid.UUID
    type: TransactionType
    status: TransactionStatus
    amount: Amount | None = None
    currency: Currency | None = None
    source_wallet_id: uuid.UUID | None = None
    destination_wallet_id: uuid.UUID | None = None
    legs: list[Leg] | None = None
    hold_id: uuid.UUID | None = None
    description: str | None
    metadata: dict[str, str]
    failure_code: (
        Literal[
            "insufficient_funds", "wallet_frozen", "wallet_not_found", "currency_mismatch",
            "retries_exhausted", "hold_expired", "hold_not_open", "capture_exceeds_hold",
        ]
        | None
    )  # fmt: skip
    failure_message: str | None
    attempts: Annotated[int, Field(ge=0)]
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None
    expires_at: Timestamp | None = None


BALANCE_EXAMPLE = {"wallet_id": _ID, "currency": "SGD", "balance": "85.00", "as_of": _AT}


class Balance(BaseModel):
    """A wallet's balance after every entry up to ``as_of``."""

    model_config = _closed(BALANCE_EXAMPLE)

    wallet_id: uuid.UUID
    currency: Currency
    balance: Amount
    as_of: Timestamp


class Mismatch(BaseModel):
    """A wallet whose stored balance (or held amount) differs from its ledger's."""

    model_config = ConfigDict(extra="forbid")

    wallet_id: uuid.UUID
    currency: Currency
    stored_balance: Amount
    ledger_balance: Amount
    stored_held_balance: Amount | None = None
    ledger_held_balance: Amount | None = None
    open_holds: Amount | None = None


RUN_EXAMPLE = {
    "id": _ID, "status": "ok", "started_at": _AT, "finished_at": _AT, "wallets_checked": 1204,
    "mismatches": [], "currency_totals": {"SGD": "0.00", "JPY": "0"}, "error": None,
}  # fmt: skip


class ReconciliationRun(BaseModel):
    """A reconciliation: every stored balance against the ledger, every currency's total."""

    model_config = _closed(RUN_EXAMPLE)

    id: uuid.UUID
    status: Literal["running", "ok", "mismatch", "error"]
    started_at: Timestamp
    finished_at: Timestamp | None
    wallets_checked: Annotated[int, Field(ge=0)]
    mismatches: list[Mismatch]
    currency_totals: dict[str, Amount]
    error: str | None


class ReconciliationStarted(BaseModel):
    """A reconciliation just started; read it at ``Location``."""

    model_config = _closed({"id": _ID, "status": "running"})

    id: uuid.UUID
    status: Literal["running"]


class Actor(BaseModel):
    """Who acted: an API key (``api_key_id`` and its name), the CLI (the OS user), or
    ``system``: Tally itself (the component in ``name``), e.g. disabling a failing webhook
    endpoint."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["api_key", "cli", "system"]
    api_key_id: uuid.UUID | None
    name: str


AUDIT_EXAMPLE = {
    "id": _ID, "action": "wallet.freeze",
    "actor": {"type": "api_key", "api_key_id": _OTHER_ID, "name": "on-call"},
    "target_ids": [_OTHER_ID], "details": {"status": "frozen"},
    "request_id": "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "created_at": _AT,
}  # fmt: skip


class AuditEvent(BaseModel):
    """One operator action from the append-only audit log."""

    model_config = _closed(AUDIT_EXAMPLE)

    id: uuid.UUID
    action: str = Field(description="`<resource>.<verb>`, e.g. `transaction.retry`.")
    actor: Actor
    target_ids: list[uuid.UUID]
    details: dict[str, Any]
    request_id: str | None
    created_at: Timestamp


BULK_RETRY_EXAMPLE = {"count": 1, "dry_run": False, "transaction_ids": [_OTHER_ID]}


class BulkRetryResult(BaseModel):
    """What a bulk retry selected (``dry_run``) or moved back to ``pending``."""

    model_config = _closed(BULK_RETRY_EXAMPLE)

    count: Annotated[int, Field(ge=0)]
    dry_run: bool
    transaction_ids: list[uuid.UUID]


class FieldError(BaseModel):
    """One field's problem; ``field`` is dotted (``legs.0.amount``), ``body`` for the whole."""

    model_config = ConfigDict(extra="forbid")

    field: str
    message: str


PROBLEM_EXAMPLE = {
    "type": "/docs/errors#validation_failed", "title": "Unprocessable content", "status": 422,
    "detail": "the request body is not valid", "code": "validation_failed",
    "errors": [{"field": "amount", "message": "SGD has 2 fractional digit(s) (ISO 4217)"}],
}  # fmt: skip


class Problem(BaseModel):
    """An error, as RFC 9457 ``application/problem+json``, with a machine ``code``."""

    model_config = _closed(PROBLEM_EXAMPLE)

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    code: str
    errors: list[FieldError] | None = None


class BatchAccepted(BaseModel):
    """A batch item recorded as pending by this request."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[202]
    transaction: Transaction


class BatchReplayed(BaseModel):
    """A batch item whose key was seen with the same request: the transaction as it is now."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[200]
    replayed: Literal[True]
    transaction: Transaction


class BatchRefused(BaseModel):
    """A batch item refused alone, with the problem the single call would answer."""

    model_config = ConfigDict(extra="forbid")

    status: Annotated[int, Field(ge=400, le=499)]
    problem: Problem


BATCH_EXAMPLE = {
    "data": [
        {"status": 202, "transaction": TRANSACTION_EXAMPLE},
        {"status": 200, "replayed": True, "transaction": TRANSACTION_EXAMPLE},
        {"status": 404, "problem": {
            "type": "/docs/errors#wallet_not_found", "title": "Not found", "status": 404,
            "detail": f"wallet {_ID} does not exist", "code": "wallet_not_found"}},
    ]
}  # fmt: skip


class BatchResults(BaseModel):
    """One result per item of a batch, in the items' order."""

    model_config = _closed(BATCH_EXAMPLE)

    data: list[BatchAccepted | BatchReplayed | BatchRefused]


class Health(BaseModel):
    """The process is up."""

    model_config = _closed({"status": "ok"})

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether PostgreSQL (``database``) and Redis (``broker``) answer."""

    model_config = _closed({"status": "ok", "checks": {"database": "ok", "broker": "ok"}})

    status: Literal["ok", "down"]
    checks: dict[str, Literal["ok", "down"]]


def page_of(model: type[BaseModel]) -> type[BaseModel]:
    """Return the list model of ``model``: ``{"data": [...], "next_cursor": str | null}``."""
    example = (model.model_config.get("json_schema_extra") or {}).get("examples", [{}])[0]  # type: ignore[union-attr]
    page = type(
        f"{model.__name__}List",
        (BaseModel,),
        {
            "__doc__": f"A page of {model.__name__} objects, newest first.",
            "__annotations__": {"data": list[model], "next_cursor": str | None},  # type: ignore[valid-type]
            "model_config": _closed({"data": [example], "next_cursor": None}),
        },
    )
    return page


MONITOR_EXAMPLE = {
    "id": _OTHER_ID, "wallet_id": _ID, "field": "available_balance", "operator": "lt",
    "value": "100.00", "description": "top up", "state": "triggered", "triggered_at": _AT,
    "created_at": _AT,
}  # fmt: skip


class BalanceMonitor(BaseModel):
    """A condition on a wallet's balance or available balance; ``triggered`` while it holds."""

    model_config = _closed(MONITOR_EXAMPLE)

    id: uuid.UUID
    wallet_id: uuid.UUID
    field: Literal["balance", "available_balance"]
    operator: Literal["lt", "lte", "gt", "gte"]
    value: Amount
    description: str | None
    state: Literal["clear", "triggered"]
    triggered_at: Timestamp | None
    created_at: Timestamp


class BalanceMonitorEvent(BaseModel):
    """A monitor's state change: the monitor and its wallet's balances at that moment, and
    the transaction that crossed the threshold (null when the monitor was created)."""

    model_config = _closed(
        {"monitor": MONITOR_EXAMPLE, "currency": "SGD", "balance": "90.00",
         "available_balance": "90.00", "transaction_id": _SYSTEM_ID}
    )  # fmt: skip

    monitor: BalanceMonitor
    currency: Currency
    balance: Amount
    available_balance: Amount
    transaction_id: uuid.UUID | None
