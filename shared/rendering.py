"""The response shapes shared by the API and the webhook payloads: each model both documents
its JSON (the OpenAPI document, ``api.openapi``) and produces it.

A model reads the database row it renders (``from_attributes``): a field whose
name differs from the row's column names it in ``validation_alias``, and an
amount is kept in integer minor units and rendered as a decimal string in its
currency (``shared.ledger.money.format_amount``) by the model's serializer. So
adding a field to a shape is one line in its model. ``Transaction``,
``ReconciliationRun`` and ``Event`` live here, not in ``api/``, because the
worker renders the same objects into webhook payloads (``shared.services.events``);
no Flask. The other shapes are in ``api.responses``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    MISSING,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    field_serializer,
    model_validator,
)

from shared.ledger.money import CURRENCY_PATTERN, format_amount
from shared.ledger.states import REVERSIBLE_TYPES
from shared.models import EventType

#: A decimal amount in major units as docs/api.md ("Conventions") renders it: ``"10.50"``, ``"1200"``, ``"-3.00"``
#: (a system wallet's balance, or a wallet's within its overdraft limit).
Amount = Annotated[str, StringConstraints(pattern=r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]


def event_public_id(event_id: uuid.UUID) -> str:
    """Return an event's id as the API and the ``webhook-id`` header show it: ``evt_<32 hex>``."""
    return f"evt_{event_id.hex}"


#: An event's public id; read from the event row's UUID.
EventId = Annotated[
    str,
    BeforeValidator(
        lambda value: event_public_id(value) if isinstance(value, uuid.UUID) else value
    ),
    StringConstraints(pattern=r"^evt_[0-9a-f]{32}$"),
]


def timestamp(value: dt.datetime | None) -> str | None:
    """Render a datetime as RFC 3339 UTC with a ``Z`` suffix (microseconds kept)."""
    if value is None:
        return None
    # isoformat: a third faster than strftime, on every timestamp of every answer.
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_RFC3339 = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
#: A datetime rendered by :func:`timestamp`.
Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(timestamp, return_type=_RFC3339),
    Field(description="RFC 3339, UTC, with Z."),
]
#: An id: a UUID, rendered as its canonical string.
Id = uuid.UUID

_ID = "7d1f7c3e-1b7a-4c55-9a57-0c1e2f3a4b5c"
_OTHER_ID = "0b9e8d7c-6f5a-4e3d-8c2b-1a0f9e8d7c6b"
_SYSTEM_ID = "5f0c3b2a-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
_EVENT_ID = "evt_0b9e8d7c6f5a4e3d8c2b1a0f9e8d7c6b"
_AT = "2026-11-22T10:00:00.000000Z"


def shape(example: dict[str, Any] | None = None) -> ConfigDict:
    """Return the config of a response model, with ``example`` for the OpenAPI document.

    The model reads rows by attribute and ignores what it does not declare (a
    row has more columns than its shape); the document says
    ``additionalProperties: false``, which holds because the model renders
    only its fields.
    """
    extra: dict[str, Any] = {"additionalProperties": False}
    if example is not None:
        extra["examples"] = [example]
    return ConfigDict(from_attributes=True, json_schema_extra=extra)


class ShapeError(RuntimeError):
    """A row does not fit its response shape: a bug on our side (500), never the client's 422."""


class Shape(BaseModel):
    """A response shape: ``Model.render(row)`` is its JSON text, ``Model.dump(row)`` a dict.

    Each raises ``ShapeError`` when ``row`` does not fit the shape.
    """

    model_config = shape()

    @classmethod
    def example(cls) -> dict[str, Any] | None:
        """Return the shape's example (the OpenAPI document shows it), or None."""
        extra: Any = cls.model_config.get("json_schema_extra") or {}
        return extra.get("examples", [None])[0]

    @classmethod
    def of(cls, row: Any) -> Self:
        """Return the shape of ``row`` (an ORM object, anything with its attributes, or a dict)."""
        try:
            return cls.model_validate(row)
        except ValidationError as error:
            # Names the fields and what is wrong, not their values (a row holds client data).
            misfits = [(e["loc"], e["type"]) for e in error.errors(include_input=False)]
            raise ShapeError(f"{cls.__name__}: {misfits}") from None

    @classmethod
    def render(cls, row: Any, **context: Any) -> str:
        """Return ``row`` rendered as this shape's JSON; ``context`` reaches the serializers."""
        return cls.of(row).model_dump_json(context=context or None)

    @classmethod
    def dump(cls, row: Any, **context: Any) -> dict[str, Any]:
        """Return ``row`` rendered as this shape, as a JSON-ready dict."""
        return cls.of(row).model_dump(mode="json", context=context or None)


class With:
    """``row`` with attributes added or replaced, for a shape to read.

    ``WebhookDelivery.render(With(delivery, event_type="transaction.failed"))``.
    """

    def __init__(self, row: Any, **attributes: Any) -> None:
        self._row = row
        self.__dict__.update(attributes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


class Leg(Shape):
    """One leg of a group: ``amount`` of ``currency`` from source to destination."""

    source_wallet_id: Id
    destination_wallet_id: Id
    amount: int = Field(validation_alias="amount_minor")
    currency: Currency

    @field_serializer("amount")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


TransactionType = Literal[
    "deposit", "withdrawal", "transfer", "hold", "group", "capture", "void", "expiry", "reversal"
]
TransactionStatus = Literal[
    "pending", "held", "completed", "failed", "voided", "expired", "scheduled", "canceled"
]
FailureCode = Literal[
    "insufficient_funds", "wallet_frozen", "wallet_not_found", "currency_mismatch",
    "retries_exhausted", "hold_expired", "hold_not_open", "capture_exceeds_hold",
    "reversal_exceeds_amount",
]  # fmt: skip

TRANSACTION_EXAMPLE: dict[str, Any] = {
    "id": _OTHER_ID, "type": "transfer", "status": "pending", "amount": "15.00",
    "currency": "SGD", "source_wallet_id": _ID, "destination_wallet_id": _SYSTEM_ID,
    "description": None, "metadata": {}, "failure_code": None, "failure_message": None,
    "attempts": 0, "created_at": _AT, "updated_at": _AT, "completed_at": None,
    "reversed_amount": "0.00",
    "scheduled_at": None,
}  # fmt: skip


def _none(value: object) -> bool:
    return value is None


#: A field left out of the JSON when it is null.
OMIT_NULL: Any = Field(default=None, exclude_if=_none)


class Transaction(Shape):
    """A transaction. A group has ``legs`` in place of ``amount``, ``currency`` and the
    wallet ids; a capture, void or expiry names its hold in ``hold_id``; a hold has
    ``expires_at``; a reversal names its original in ``reverses_id``; a type that can be
    reversed (deposit, withdrawal, transfer, capture) has ``reversed_amount``, the sum of
    its completed reversals; ``scheduled_at`` is always there, null unless it was scheduled."""

    model_config = shape(TRANSACTION_EXAMPLE)
    #: Left out of a group, which has ``legs`` instead.
    SINGLE_LEG: ClassVar = ("amount", "currency", "source_wallet_id", "destination_wallet_id")

    id: Id
    type: TransactionType
    status: TransactionStatus
    amount: int | MISSING = Field(default=MISSING, validation_alias="amount_minor")
    currency: Currency | MISSING = MISSING
    source_wallet_id: Id | None | MISSING = MISSING
    destination_wallet_id: Id | None | MISSING = MISSING
    legs: list[Leg] | None = OMIT_NULL
    hold_id: Id | None = OMIT_NULL
    reverses_id: Id | None = OMIT_NULL
    # None on a row (or an event's view of one) recorded before reversals: nothing reversed.
    reversed_amount: int | None | MISSING = Field(
        default=MISSING, validation_alias="reversed_minor"
    )
    description: str | None
    metadata: Annotated[dict[str, str], BeforeValidator(lambda value: value or {})] = Field(
        validation_alias="metadata_"
    )
    failure_code: FailureCode | None
    failure_message: str | None
    attempts: Annotated[int, Field(ge=0)]
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None
    expires_at: Timestamp | None = OMIT_NULL
    scheduled_at: Timestamp | None = Field(
        default=None,
        description='When it was scheduled for (docs/api.md, "Scheduled transactions"); '
        "null when not scheduled.",
    )

    @model_validator(mode="after")
    def _group(self) -> Self:
        if self.legs is not None:
            for name in self.SINGLE_LEG:
                setattr(self, name, MISSING)
        if self.type in REVERSIBLE_TYPES:
            self.reversed_amount = self.reversed_amount or 0
        else:
            self.reversed_amount = MISSING
        return self

    @field_serializer("amount", "reversed_amount")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)  # type: ignore[arg-type]


class Mismatch(Shape):
    """A wallet whose stored balance (or held amount) differs from its ledger's.

    Runs recorded before holds existed carry no held amounts: those are left out.
    """

    wallet_id: Id
    currency: Currency
    stored_balance: int = Field(validation_alias="stored_balance_minor")
    ledger_balance: int = Field(validation_alias="ledger_balance_minor")
    stored_held_balance: int | MISSING = Field(
        MISSING, validation_alias="stored_held_balance_minor"
    )
    ledger_held_balance: int | MISSING = Field(
        MISSING, validation_alias="ledger_held_balance_minor"
    )
    open_holds: int | MISSING = Field(MISSING, validation_alias="open_holds_minor")

    @field_serializer(
        "stored_balance", "ledger_balance", "stored_held_balance", "ledger_held_balance",
        "open_holds",
    )  # fmt: skip
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


RUN_EXAMPLE: dict[str, Any] = {
    "id": _ID, "status": "ok", "started_at": _AT, "finished_at": _AT, "wallets_checked": 1204,
    "mismatches": [], "currency_totals": {"SGD": "0.00", "JPY": "0"}, "error": None,
}  # fmt: skip


class ReconciliationRun(Shape):
    """A reconciliation: every stored balance against the ledger, every currency's total."""

    model_config = shape(RUN_EXAMPLE)

    id: Id
    status: Literal["running", "ok", "mismatch", "error"]
    started_at: Timestamp
    finished_at: Timestamp | None
    wallets_checked: Annotated[int, Field(ge=0)]
    mismatches: list[Mismatch]
    currency_totals: dict[str, int]
    error: str | None

    @field_serializer("currency_totals")
    def _totals(self, totals: dict[str, int]) -> dict[str, Amount]:
        return {code: format_amount(minor, code) for code, minor in sorted(totals.items())}


MONITOR_EXAMPLE: dict[str, Any] = {
    "id": _OTHER_ID, "wallet_id": _ID, "field": "available_balance", "operator": "lt",
    "value": "100.00", "description": "top up", "state": "triggered", "triggered_at": _AT,
    "created_at": _AT,
}  # fmt: skip


class BalanceMonitor(Shape):
    """A condition on a wallet's balance or available balance; ``triggered`` while it holds.

    Reads a ``shared.models.BalanceMonitor`` with its wallet's ``currency`` laid over
    it (``With(monitor, currency=...)``), or an event's snapshot of one.
    """

    model_config = shape(MONITOR_EXAMPLE)

    id: Id
    wallet_id: Id
    field: Literal["balance", "available_balance"]
    operator: Literal["lt", "lte", "gt", "gte"]
    value: int = Field(validation_alias="value_minor")
    description: str | None
    state: Literal["clear", "triggered"]
    triggered_at: Timestamp | None
    created_at: Timestamp
    currency: Currency = Field(exclude=True)

    @field_serializer("value")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


class BalanceMonitorEvent(Shape):
    """A monitor's state change: the monitor and its wallet's balances at that moment, and
    the transaction that crossed its value (null for the event at its creation)."""

    model_config = shape(
        {"monitor": MONITOR_EXAMPLE, "currency": "SGD", "balance": "90.00",
         "available_balance": "90.00", "transaction_id": _SYSTEM_ID}
    )  # fmt: skip

    monitor: BalanceMonitor
    currency: Currency
    balance: int = Field(validation_alias="balance_minor")
    available_balance: int = Field(validation_alias="available_minor")
    transaction_id: Id | None

    @field_serializer("balance", "available_balance")
    def _amount(self, minor: int) -> Amount:
        return format_amount(minor, self.currency)


def monitor_event_view(event: Any) -> dict[str, Any]:
    """Return what :class:`BalanceMonitorEvent` reads of a balance monitor's event.

    ``event.snapshot`` holds the monitor, its wallet's currency, balance and held
    amount in minor units as they were (``shared.services.monitors``);
    ``event.transaction_id`` the transaction that crossed the value.
    """
    snapshot = event.snapshot
    return {
        "monitor": snapshot,
        "currency": snapshot["currency"],
        "balance_minor": snapshot["balance_minor"],
        "available_minor": snapshot["balance_minor"] - snapshot["held_minor"],
        "transaction_id": event.transaction_id,
    }


EVENT_EXAMPLE: dict[str, Any] = {
    "id": _EVENT_ID, "type": "reconciliation.error", "created_at": _AT,
    "data": {"id": _ID, "status": "error", "started_at": _AT, "finished_at": _AT,
             "wallets_checked": 0, "mismatches": [], "currency_totals": {}, "error": "timeout"},
}  # fmt: skip


class Event(Shape):
    """A notification: what changed, and the object as it was at that moment (``data``)."""

    model_config = shape(EVENT_EXAMPLE)

    id: EventId
    type: EventType
    created_at: Timestamp
    data: Transaction | ReconciliationRun | BalanceMonitorEvent | None
