"""Response shapes of the API (pydantic): each documents its JSON (``api.openapi``) and
produces it (``api.render.answer``), so the document cannot drift from what is sent.

``shared.rendering`` holds the machinery (``Shape``) and the shapes the worker
renders too (``Transaction``, ``ReconciliationRun``, ``Event``); they are
re-exported here. Each model carries an example, which the document shows with
every response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_serializer, model_validator

from shared.ledger.money import format_amount
from shared.models import EventType
from shared.rendering import (
    OMIT_NULL,
    TRANSACTION_EXAMPLE,
    Amount,
    BalanceMonitor,
    Currency,
    Event,
    EventId,
    Id,
    ReconciliationRun,
    Shape,
    Timestamp,
    Transaction,
    TransactionType,
    With,
    shape,
)

__all__ = ["BalanceMonitor", "Event", "ReconciliationRun", "Transaction"]

_ID = "7d1f7c3e-1b7a-4c55-9a57-0c1e2f3a4b5c"
_OTHER_ID = "0b9e8d7c-6f5a-4e3d-8c2b-1a0f9e8d7c6b"
_EVENT_ID = "evt_0b9e8d7c6f5a4e3d8c2b1a0f9e8d7c6b"
_AT = "2026-11-22T10:00:00.000000Z"


WALLET_EXAMPLE = {
    "id": _ID, "owner_ref": "+6591234567", "currency": "SGD", "balance": "100.00",
    "available_balance": "80.00", "held_balance": "20.00", "overdraft_limit": "0.00",
    "status": "active",
    "is_system": False, "created_at": _AT, "updated_at": _AT,
}  # fmt: skip


class Wallet(Shape):
    """A wallet: one owner (none for a system wallet), one currency, its balances."""

    model_config = shape(WALLET_EXAMPLE)

    id: Id
    owner_ref: str | None
    currency: Currency
    balance: int = Field(validation_alias="balance_minor")
    available_balance: int = Field(validation_alias="available_minor")
    held_balance: int = Field(validation_alias="held_minor")
    overdraft_limit: int = Field(
        validation_alias="overdraft_limit_minor",
        description="How far below zero available_balance may go.",
    )
    status: Literal["active", "frozen"]
    is_system: bool
    created_at: Timestamp
    updated_at: Timestamp

    @field_serializer("balance", "available_balance", "held_balance", "overdraft_limit")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


ENTRY_EXAMPLE = {
    "id": "42", "wallet_id": _ID, "transaction_id": _OTHER_ID, "transaction_type": "transfer",
    "direction": "debit", "amount": "15.00", "balance_after": "85.00", "sequence": 7,
    "created_at": _AT,
}  # fmt: skip


class LedgerEntry(Shape):
    """One append-only ledger entry of a wallet; ``sequence`` counts from 1 with no gap."""

    # Its amounts are in its wallet's currency: LedgerEntry.render(entry, currency="SGD").
    model_config = shape(ENTRY_EXAMPLE)

    id: int
    wallet_id: Id
    transaction_id: Id
    transaction_type: TransactionType
    direction: Literal["debit", "credit"]
    amount: int = Field(validation_alias="amount_minor")
    balance_after: int = Field(validation_alias="balance_after_minor")
    sequence: Annotated[int, Field(ge=1)]
    created_at: Timestamp

    @field_serializer("id")
    def _id(self, value: int) -> Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]:
        return str(value)

    @field_serializer("amount", "balance_after")
    def _amount(self, minor: int, info: Any) -> Amount:
        return format_amount(minor, info.context["currency"])


BALANCE_EXAMPLE = {"wallet_id": _ID, "currency": "SGD", "balance": "85.00", "as_of": _AT}


class Balance(Shape):
    """A wallet's balance after every entry up to ``as_of``."""

    model_config = shape(BALANCE_EXAMPLE)

    wallet_id: Id
    currency: Currency
    balance: int = Field(validation_alias="balance_minor")
    as_of: Timestamp

    @field_serializer("balance")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


class ReconciliationStarted(Shape):
    """A reconciliation just started; read it at ``Location``."""

    model_config = shape({"id": _ID, "status": "running"})

    id: Id
    status: Literal["running"]


class Actor(Shape):
    """Who acted: an API key (``api_key_id`` and its name), the CLI (the OS user), or
    ``system``: Tally itself (the component in ``name``), e.g. disabling a failing webhook
    endpoint."""

    type: Literal["api_key", "cli", "system"] = Field(validation_alias="actor_type")
    api_key_id: Id | None = Field(validation_alias="actor_key_id")
    name: str = Field(validation_alias="actor_name")


AUDIT_EXAMPLE = {
    "id": _ID, "action": "wallet.freeze",
    "actor": {"type": "api_key", "api_key_id": _OTHER_ID, "name": "on-call"},
    "target_ids": [_OTHER_ID], "details": {"status": "frozen"},
    "request_id": "4bf92f35-77b3-4da6-a3ce-929d0e0e4736", "created_at": _AT,
}  # fmt: skip


class AuditEvent(Shape):
    """One operator action from the append-only audit log."""

    # actor is read from the row's actor_* columns (Actor's aliases).
    model_config = shape(AUDIT_EXAMPLE)

    id: Id
    action: str = Field(description="`<resource>.<verb>`, e.g. `transaction.retry`.")
    actor: Actor
    target_ids: list[Id]
    details: dict[str, Any]
    request_id: str | None
    created_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _actor(cls, row: Any) -> Any:
        return row if isinstance(row, dict) else With(row, actor=row)


BULK_RETRY_EXAMPLE = {"count": 1, "dry_run": False, "transaction_ids": [_OTHER_ID]}


class BulkRetryResult(Shape):
    """What a bulk retry selected (``dry_run``) or moved back to ``pending``."""

    model_config = shape(BULK_RETRY_EXAMPLE)

    count: Annotated[int, Field(ge=0)]
    dry_run: bool
    transaction_ids: list[Id]


class FieldError(Shape):
    """One field's problem; ``field`` is dotted (``legs.0.amount``), ``body`` for the whole."""

    field: str
    message: str


PROBLEM_EXAMPLE = {
    "type": "/docs/errors#validation_failed", "title": "Unprocessable content", "status": 422,
    "detail": "the request body is not valid", "code": "validation_failed",
    "errors": [{"field": "amount", "message": "SGD has 2 fractional digit(s) (ISO 4217)"}],
}  # fmt: skip


class Problem(Shape):
    """An error, as RFC 9457 ``application/problem+json``, with a machine ``code``."""

    model_config = shape(PROBLEM_EXAMPLE)

    type: str
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str
    code: str
    errors: list[FieldError] | None = OMIT_NULL


class BatchAccepted(Shape):
    """A batch item recorded as pending by this request."""

    status: Literal[202]
    transaction: Transaction


class BatchReplayed(Shape):
    """A batch item whose key was seen with the same request: the transaction as it is now."""

    status: Literal[200]
    replayed: Literal[True]
    transaction: Transaction


class BatchRefused(Shape):
    """A batch item refused alone, with the problem the single call would answer."""

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


class BatchResults(Shape):
    """One result per item of a batch, in the items' order."""

    model_config = shape(BATCH_EXAMPLE)

    data: list[BatchAccepted | BatchReplayed | BatchRefused]


class Health(Shape):
    """The process is up."""

    model_config = shape({"status": "ok"})

    status: Literal["ok"]


class Readiness(Shape):
    """Whether PostgreSQL (``database``) and Redis (``broker``) answer."""

    model_config = shape({"status": "ok", "checks": {"database": "ok", "broker": "ok"}})

    status: Literal["ok", "down"]
    checks: dict[str, Literal["ok", "down"]]


ENDPOINT_EXAMPLE = {
    "id": _ID, "url": "https://example.com/tally-hooks", "events": ["transaction.failed"],
    "description": "on-call pager", "status": "enabled", "disabled_reason": None,
    "created_at": _AT, "updated_at": _AT,
}  # fmt: skip


class WebhookEndpoint(Shape):
    """A registered receiver of events (its secret is shown only when it is created)."""

    model_config = shape(ENDPOINT_EXAMPLE)

    id: Id
    url: str
    events: list[EventType] = Field(validation_alias="event_types")
    description: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class WebhookEndpointCreated(WebhookEndpoint):
    """A new endpoint and its signing secret (Standard Webhooks ``whsec_``), shown this once."""

    model_config = shape(ENDPOINT_EXAMPLE | {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})

    secret: Annotated[str, StringConstraints(pattern=r"^whsec_")]


DELIVERY_EXAMPLE = {
    "id": _ID, "event_id": _EVENT_ID, "event_type": "transaction.failed", "endpoint_id": _ID,
    "status": "pending", "attempts": 1, "last_status_code": 503, "last_error": None,
    "next_attempt_at": _AT, "delivered_at": None, "created_at": _AT,
}  # fmt: skip


class WebhookDelivery(Shape):
    """One event's delivery to one endpoint, retried with backoff until it succeeds or fails."""

    # Read from the delivery row with its event's type: With(delivery, event_type=...).
    model_config = shape(DELIVERY_EXAMPLE)

    id: Id
    event_id: EventId
    event_type: EventType
    endpoint_id: Id
    status: Literal["pending", "succeeded", "failed"]
    attempts: Annotated[int, Field(ge=0)]
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    created_at: Timestamp


_PAGES: dict[type[BaseModel], type[Shape]] = {}


def page_of(model: type[Shape]) -> type[Shape]:
    """Return the list shape of ``model``: ``{"data": [...], "next_cursor": str | null}``.

    One class per model (cached), named ``<Model>List`` in the document; render a
    page with ``page_of(Model).render({"data": rows, "next_cursor": cursor})``.
    """
    if model not in _PAGES:
        example = model.example() or {}
        _PAGES[model] = type(
            f"{model.__name__}List",
            (Shape,),
            {
                "__doc__": f"A page of {model.__name__} objects, newest first.",
                "__annotations__": {"data": list[model], "next_cursor": str | None},  # type: ignore[valid-type]
                "model_config": shape({"data": [example], "next_cursor": None}),
            },
        )
    return _PAGES[model]
