"""Typed objects of the Tally API, as docs/openapi.yaml describes them.

Amounts are :class:`decimal.Decimal` in major units, parsed exactly from the
API's strings (``"10.00"`` stays ``Decimal("10.00")``; ``str()`` gives it
back); timestamps are aware ``datetime`` objects in UTC. Enumerations
(``status``, ``type``, ``failure_code``) are plain strings, so a value a newer
server adds does not break an older client, and every model keeps fields it
does not know (``model_extra``) for the same reason.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")

#: Statuses a transaction leaves only by an ops retry; ``held`` ends with a capture, void
#: or expiry (docs/api.md, "Transactions"); ``canceled`` is a scheduled one canceled.
TERMINAL_STATUSES = frozenset({"completed", "failed", "voided", "expired", "canceled"})


#: Statuses of a transaction not yet applied: due later (``scheduled``) or waiting for a worker.
UNSETTLED_STATUSES = frozenset({"scheduled", "pending"})


class TallyModel(BaseModel):
    """Base of every response model: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Page(TallyModel, Generic[T]):
    """One page of a list: ``data`` newest first, ``next_cursor`` for the next (None: last)."""

    data: list[T]
    next_cursor: str | None = None


class Wallet(TallyModel):
    """A wallet: one owner (None for a currency's system wallet), one currency, its balances.

    ``available_balance`` is ``balance - held_balance``; all in major units. It may go
    down to ``-overdraft_limit``.
    """

    id: uuid.UUID
    owner_ref: str | None
    currency: str
    balance: Decimal
    available_balance: Decimal
    held_balance: Decimal
    overdraft_limit: Decimal = Decimal(0)
    status: str
    is_system: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class LedgerEntry(TallyModel):
    """One append-only ledger entry: a debit or credit of ``amount``; ``sequence`` counts from 1."""

    id: str
    wallet_id: uuid.UUID
    transaction_id: uuid.UUID
    transaction_type: str
    direction: str
    amount: Decimal
    balance_after: Decimal
    sequence: int
    created_at: dt.datetime


class Balance(TallyModel):
    """A wallet's balance after every ledger entry up to ``as_of``."""

    wallet_id: uuid.UUID
    currency: str
    balance: Decimal
    as_of: dt.datetime


class Leg(TallyModel):
    """One leg of a group: ``amount`` of ``currency`` from source to destination."""

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount: Decimal
    currency: str


class Transaction(TallyModel):
    """A transaction. A group carries ``legs`` in place of amount, currency and wallet ids;
    a capture, void or expiry names its hold in ``hold_id``; a reversal names the original
    in ``reverses_id``; a hold has ``expires_at``.

    ``status``: ``pending``, then ``completed`` or ``failed`` (holds: ``held``, then
    ``completed``, ``voided`` or ``expired``); ``failure_code`` says which rule failed.
    A transaction submitted with a future ``scheduled_at`` is ``scheduled`` until then,
    then ``pending``, or ``canceled`` if canceled first; ``scheduled_at`` is None for
    one that was not scheduled.
    """

    id: uuid.UUID
    type: str
    status: str
    amount: Decimal | None = None
    currency: str | None = None
    source_wallet_id: uuid.UUID | None = None
    destination_wallet_id: uuid.UUID | None = None
    legs: list[Leg] | None = None
    hold_id: uuid.UUID | None = None
    reverses_id: uuid.UUID | None = None
    #: The sum of its completed reversals (deposit, withdrawal, transfer, capture).
    reversed_amount: Decimal | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    failure_code: str | None = None
    failure_message: str | None = None
    attempts: int = 0
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    scheduled_at: dt.datetime | None = None

    @property
    def is_settled(self) -> bool:
        """Return whether the transaction is past ``scheduled`` and ``pending``: applied (``held``
        counts: a hold applied) or ``canceled``."""
        return self.status not in UNSETTLED_STATUSES


class BalanceMonitor(TallyModel):
    """A condition on one wallet's ``field`` (``balance`` or ``available_balance``):
    ``operator`` (``lt``, ``lte``, ``gt``, ``gte``) ``value`` (major units, may be zero or
    negative). ``state`` is ``triggered`` while it holds (since ``triggered_at``), else
    ``clear``."""

    id: uuid.UUID
    wallet_id: uuid.UUID
    field: str
    operator: str
    value: Decimal
    description: str | None = None
    state: str
    triggered_at: dt.datetime | None = None
    created_at: dt.datetime


class BalanceMonitorEvent(TallyModel):
    """The ``data`` of a ``balance_monitor.*`` event: the monitor and its wallet's balances
    at the change, and the transaction that crossed the value (None at the monitor's creation)."""

    monitor: BalanceMonitor
    currency: str
    balance: Decimal
    available_balance: Decimal
    transaction_id: uuid.UUID | None = None


class FieldError(TallyModel):
    """One field's problem; ``field`` is dotted (``legs.0.amount``), ``body`` for the whole."""

    field: str
    message: str


class Problem(TallyModel):
    """An RFC 9457 problem: ``code`` is the machine code to branch on, ``detail`` for humans."""

    type: str = "about:blank"
    title: str = ""
    status: int
    detail: str = ""
    code: str = ""
    errors: list[FieldError] | None = None


class BatchResult(TallyModel):
    """One item's result in a batch: ``status`` 202 (recorded), 200 with ``replayed`` (its key
    was seen with the same request), or a 4xx with the ``problem`` that refused it alone."""

    status: int
    replayed: bool = False
    transaction: Transaction | None = None
    problem: Problem | None = None


class BatchResults(TallyModel):
    """The results of a batch, one per item, in the items' order."""

    data: list[BatchResult]


class BulkRetryResult(TallyModel):
    """What a bulk retry selected (``dry_run``) or moved back to ``pending``."""

    count: int
    dry_run: bool
    transaction_ids: list[uuid.UUID]


class Mismatch(TallyModel):
    """A wallet whose stored balance (or held amount) differs from its ledger's."""

    wallet_id: uuid.UUID
    currency: str
    stored_balance: Decimal
    ledger_balance: Decimal


class ReconciliationRun(TallyModel):
    """A reconciliation run: ``running``, then ``ok``, ``mismatch`` or ``error``."""

    id: uuid.UUID
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    wallets_checked: int = 0
    mismatches: list[Mismatch] = Field(default_factory=list)
    currency_totals: dict[str, Decimal] = Field(default_factory=dict)
    error: str | None = None


class ReconciliationStarted(TallyModel):
    """A reconciliation just started; read it with ``reconciliations.get(id)``."""

    id: uuid.UUID
    status: str


class WebhookEndpoint(TallyModel):
    """A registered receiver of events; its secret is shown only when it is created."""

    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None = None
    status: str
    disabled_reason: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class WebhookEndpointCreated(WebhookEndpoint):
    """A new endpoint and its signing secret (``whsec_...``), shown this once."""

    secret: str


class WebhookDelivery(TallyModel):
    """One event's delivery to one endpoint: ``pending``, ``succeeded`` or ``failed``."""

    id: uuid.UUID
    event_id: str
    event_type: str
    endpoint_id: uuid.UUID
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None
    created_at: dt.datetime


class Event(TallyModel):
    """A notification: its ``type`` and the object as it was at that moment (``data``):
    a Transaction for ``transaction.*``, a ReconciliationRun for ``reconciliation.*``,
    a BalanceMonitorEvent for ``balance_monitor.*``."""

    id: str
    type: str
    created_at: dt.datetime
    data: Transaction | ReconciliationRun | BalanceMonitorEvent | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _typed_data(cls, value: Any) -> Any:
        """Read ``data`` as the model its event type names; other types keep a dict."""
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            model = _DATA_BY_TYPE_PREFIX.get(str(value.get("type", "")).split(".")[0])
            if model is not None:
                return value | {"data": model.model_validate(value["data"])}
        return value


_DATA_BY_TYPE_PREFIX: dict[str, type[TallyModel]] = {
    "transaction": Transaction,
    "reconciliation": ReconciliationRun,
    "balance_monitor": BalanceMonitorEvent,
}


class Actor(TallyModel):
    """Who acted: an API key, the CLI, or Tally itself (``system``)."""

    type: str
    api_key_id: uuid.UUID | None = None
    name: str


class AuditEvent(TallyModel):
    """One operator action from the append-only audit log."""

    id: uuid.UUID
    action: str
    actor: Actor
    target_ids: list[uuid.UUID]
    details: dict[str, Any]
    request_id: str | None = None
    created_at: dt.datetime


class PendingBacklog(TallyModel):
    """How many transactions are pending, and the oldest one's age in seconds."""

    count: int
    oldest_age_seconds: float


class ThroughputMinute(TallyModel):
    """Transactions settled in one UTC minute, by outcome."""

    minute: dt.datetime
    completed: int
    failed: int
    other: int


class OpsOverview(TallyModel):
    """The pending backlog and the last minutes' throughput, oldest minute first."""

    pending: PendingBacklog
    throughput: list[ThroughputMinute]


class Health(TallyModel):
    """The API process is up."""

    status: str


class Readiness(TallyModel):
    """Whether PostgreSQL (``database``) and Redis (``broker``) answer: ``ok`` or ``down``."""

    status: str
    checks: dict[str, str]
