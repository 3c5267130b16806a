"""SQLAlchemy 2 typed models: the ledger's tables.

The schema itself is created and changed only by the Alembic migrations in
``shared/migrations``; ``tests/integration/test_schema.py`` checks that the
two agree. Money columns are ``BIGINT`` minor units and end in ``_minor``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Sequence,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Orders transactions within a lane (the wallet whose debits they are); docs/architecture.md, invariant 6.
lane_sequence = Sequence("transaction_lane_seq")


class Base(DeclarativeBase):
    """Declarative base of every Tally table."""

    type_annotation_map = {
        dt.datetime: DateTime(timezone=True),
        uuid.UUID: UUID(as_uuid=True),
    }


def _now() -> Any:
    return mapped_column(server_default=func.now())


class Currency(Base):
    """An ISO 4217 currency and its minor-unit exponent (SGD 2, JPY 0)."""

    __tablename__ = "currencies"

    code: Mapped[str] = mapped_column(String(3), primary_key=True)
    exponent: Mapped[int] = mapped_column(SmallInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))

    __table_args__ = (CheckConstraint("exponent BETWEEN 0 AND 4", name="exponent_range"),)


class Wallet(Base):
    """A holder of one currency; system wallets (no owner) are deposit/withdrawal counterparties."""

    __tablename__ = "wallets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_ref: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"))
    balance_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    held_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_sequence: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'active'"))
    is_system: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    #: How far below zero debits and holds may take the available balance (migration 0012).
    overdraft_limit_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        UniqueConstraint("owner_ref", "currency", name="wallets_owner_currency_key"),
        Index(
            "wallets_one_system_per_currency",
            "currency",
            unique=True,
            postgresql_where=text("is_system"),
        ),
        Index("wallets_created_at_id", "created_at", "id"),
        # docs/architecture.md, invariant 2, backing the posting rules (migration 0012).
        CheckConstraint(
            "is_system OR balance_minor >= -overdraft_limit_minor", name="balance_within_overdraft"
        ),
        CheckConstraint(
            "is_system OR balance_minor - held_minor >= -overdraft_limit_minor",
            name="available_within_overdraft",
        ),
        CheckConstraint("overdraft_limit_minor >= 0", name="overdraft_limit_not_negative"),
        CheckConstraint("held_minor >= 0", name="held_not_negative"),
        CheckConstraint("is_system = (owner_ref IS NULL)", name="system_has_no_owner"),
        CheckConstraint("status IN ('active', 'frozen')", name="status_known"),
    )

    @property
    def available_minor(self) -> int:
        """The available balance in minor units: the balance less what holds reserve."""
        return self.balance_minor - self.held_minor


#: The predicate of the partial index ``transactions_metadata``: a query must say
#: it in these words for PostgreSQL to use the index (PostgreSQL docs, "Partial
#: Indexes"); ``metadata @> '{"k": "v"}'`` with a pair implies it.
HAS_METADATA = text("metadata <> '{}'::jsonb")


class Transaction(Base):
    """A request to move money, from ``pending`` to a terminal status.

    ``lane_wallet_id`` is its lane: its debited wallet (a deposit's
    destination). ``lane_sequence`` is its place in the one apply stream,
    assigned at intake and again at an ops retry from one sequence for every
    lane: the acceptance order (docs/architecture.md, "Glossary").
    """

    __tablename__ = "transactions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(ForeignKey("currencies.code"))
    source_wallet_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("wallets.id"))
    destination_wallet_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("wallets.id"))
    lane_wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id"))
    lane_sequence: Mapped[int] = mapped_column(
        BigInteger, lane_sequence, server_default=lane_sequence.next_value()
    )
    hold_id: Mapped[uuid.UUID | None] = mapped_column()
    legs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    failure_code: Mapped[str | None] = mapped_column(Text)
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    completed_at: Mapped[dt.datetime | None] = mapped_column()
    #: The ``X-Request-Id`` of the request that submitted it, so
    #: the worker's log lines name the request (migration 0008).
    request_id: Mapped[str | None] = mapped_column(Text)
    #: A reversal's original (no foreign key: either side archives alone), and
    #: on the original the sum of its completed reversals (migration 0013).
    reverses_id: Mapped[uuid.UUID | None] = mapped_column()
    reversed_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    #: When a scheduled transaction becomes due; None when none was asked (migration 0014).
    scheduled_at: Mapped[dt.datetime | None] = mapped_column()

    __table_args__ = (
        UniqueConstraint("api_key_id", "idempotency_key", name="transactions_idempotency_key"),
        Index(
            "transactions_pending_sequence",
            "lane_sequence",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("transactions_hold", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
        Index(
            "transactions_reverses",
            "reverses_id",
            postgresql_where=text("reverses_id IS NOT NULL"),
        ),
        # Partial, as is transactions_metadata: a GIN index keeps an entry for a
        # NULL or empty value too, on every intake (migration 0019).
        Index(
            "transactions_legs",
            "legs",
            postgresql_using="gin",
            postgresql_ops={"legs": "jsonb_path_ops"},
            postgresql_where=text("legs IS NOT NULL"),
        ),
        Index(
            "transactions_open_holds",
            "source_wallet_id",
            postgresql_where=text("type = 'hold' AND status = 'held'"),
        ),
        Index(
            "transactions_pending_updated_at",
            "updated_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("transactions_created_at_id", "created_at", "id"),
        # GET /v1/transactions?metadata[KEY]=VALUE: metadata @> '{...}' (migration 0012),
        # with HAS_METADATA, which the filter adds (migration 0019).
        Index(
            "transactions_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
            postgresql_where=HAS_METADATA,
        ),
        # Beat's release reads the due scheduled transactions (shared.services.scheduled).
        Index(
            "transactions_scheduled_at",
            "scheduled_at",
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index("transactions_source_wallet", "source_wallet_id", "created_at"),
        Index("transactions_destination_wallet", "destination_wallet_id", "created_at"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint("reversed_minor BETWEEN 0 AND amount_minor", name="reversed_within_amount"),
        CheckConstraint(
            "(type = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_names_original"
        ),
        CheckConstraint(
            "status IN ('pending', 'held', 'completed', 'failed', 'voided', 'expired', "
            "'scheduled', 'canceled')",
            name="status_known",
        ),
        CheckConstraint(
            "type IN ('deposit', 'withdrawal', 'transfer', 'hold', 'group', "
            "'capture', 'void', 'expiry', 'reversal')",
            name="type_known",
        ),
        # Room for the claim's in-place (heap-only) update of attempts.
        {"postgresql_with": {"fillfactor": 80}},
    )


class LedgerEntry(Base):
    """One side of a posting on one wallet; append-only (a trigger rejects UPDATE and DELETE)."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id"))
    transaction_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("transactions.id"))
    transaction_type: Mapped[str] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_after_minor: Mapped[int] = mapped_column(BigInteger)
    sequence: Mapped[int] = mapped_column(BigInteger)
    # clock_timestamp(), not now(): taken while the wallet row is locked, so it
    # grows with ``sequence`` and as-of reads can seek by time.
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.clock_timestamp())

    __table_args__ = (
        UniqueConstraint("wallet_id", "sequence", name="ledger_entries_wallet_sequence"),
        Index("ledger_entries_wallet_created_at", "wallet_id", "created_at"),
        Index("ledger_entries_transaction", "transaction_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("sequence > 0", name="sequence_positive"),
        CheckConstraint("direction IN ('debit', 'credit')", name="direction_known"),
    )


class HoldEntry(Base):
    """A change of a wallet's held amount: ``hold`` reserves, ``release`` gives back.

    Append-only (a trigger rejects UPDATE, DELETE and TRUNCATE). A wallet's
    ``held_minor`` equals the sum of its hold entries, which reconciliation
    checks; no foreign keys to transactions, so either side archives alone.
    """

    __tablename__ = "hold_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id"))
    hold_id: Mapped[uuid.UUID] = mapped_column()
    transaction_id: Mapped[uuid.UUID] = mapped_column()
    direction: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    held_after_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.clock_timestamp())

    __table_args__ = (
        Index("hold_entries_wallet", "wallet_id", "id"),
        Index("hold_entries_hold", "hold_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("held_after_minor >= 0", name="held_after_not_negative"),
        CheckConstraint("direction IN ('hold', 'release')", name="direction_known"),
    )


class ApiKey(Base):
    """An API key; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column()

    __table_args__ = (CheckConstraint("role IN ('service', 'ops')", name="role_known"),)


# Maintenance (migration 0002): snapshots, archive tables, reconciliation runs.
# docs/maintenance.md explains how they keep balances and history exact.

#: Lets the archive job find old entries cheaply (see migration 0002).
Index("ledger_entries_created_at_brin", LedgerEntry.created_at, postgresql_using="brin")


class BalanceSnapshot(Base):
    """A wallet's balance after entry ``last_sequence``: the last entry it had on UTC ``day``.

    Taken for the closed days on which the wallet had entries; a day without
    entries has no row and carries the previous row's balance forward.
    """

    __tablename__ = "balance_snapshots"

    wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = _now()

    __table_args__ = (CheckConstraint("last_sequence > 0", name="snapshot_sequence_positive"),)


class LedgerEntryArchive(Base):
    """A ledger entry moved out of ``ledger_entries``: same columns, no foreign keys, append-only."""

    __tablename__ = "ledger_entries_archive"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    wallet_id: Mapped[uuid.UUID] = mapped_column()
    transaction_id: Mapped[uuid.UUID] = mapped_column()
    transaction_type: Mapped[str] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_after_minor: Mapped[int] = mapped_column(BigInteger)
    sequence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column()

    __table_args__ = (
        UniqueConstraint("wallet_id", "sequence", name="ledger_entries_archive_wallet_sequence"),
        Index("ledger_entries_archive_wallet_created_at", "wallet_id", "created_at"),
        Index("ledger_entries_archive_transaction", "transaction_id"),
    )


class TransactionArchive(Base):
    """A terminal transaction moved out of ``transactions``: same columns, no foreign keys."""

    __tablename__ = "transactions_archive"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    source_wallet_id: Mapped[uuid.UUID | None] = mapped_column()
    destination_wallet_id: Mapped[uuid.UUID | None] = mapped_column()
    lane_wallet_id: Mapped[uuid.UUID] = mapped_column()
    lane_sequence: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[uuid.UUID | None] = mapped_column()
    legs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB)
    failure_code: Mapped[str | None] = mapped_column(Text)
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    api_key_id: Mapped[uuid.UUID] = mapped_column()
    idempotency_key: Mapped[str] = mapped_column(Text)
    request_hash: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column()
    updated_at: Mapped[dt.datetime] = mapped_column()
    completed_at: Mapped[dt.datetime | None] = mapped_column()
    request_id: Mapped[str | None] = mapped_column(Text)
    reverses_id: Mapped[uuid.UUID | None] = mapped_column()
    reversed_minor: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    scheduled_at: Mapped[dt.datetime | None] = mapped_column()

    __table_args__ = (Index("transactions_archive_created_at_id", "created_at", "id"),)


class ReconciliationRun(Base):
    """One reconciliation: stored balances against the ledger, and currency totals.

    ``mismatches`` is ``[{"wallet_id", "currency", "stored_balance_minor",
    "ledger_balance_minor"}]``; ``currency_totals`` is ``{code: sum of stored
    balances in minor units}``, zero for every currency when all is well.
    """

    __tablename__ = "reconciliation_runs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    started_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    wallets_checked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    mismatches: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    currency_totals: Mapped[dict[str, int]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("reconciliation_runs_started_at_id", "started_at", "id"),
        CheckConstraint(
            "status IN ('running', 'ok', 'mismatch', 'error')", name="run_status_known"
        ),
    )


class AuditEvent(Base):
    """One operator action (migration 0006); append-only (a trigger rejects UPDATE and DELETE).

    ``actor_type`` is ``api_key`` (``actor_key_id`` and the key's name in
    ``actor_name``), ``cli`` (the OS user in ``actor_name``) or ``system``
    (Tally itself, e.g. disabling a failing webhook endpoint; migration 0009); ``target_ids``
    are the ids the action touched; ``details`` holds what else it needs
    (filters of a bulk retry, the status a wallet was given).
    """

    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(Text)
    actor_type: Mapped[str] = mapped_column(Text)
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column()
    actor_name: Mapped[str] = mapped_column(Text)
    target_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(UUID(as_uuid=True)), server_default=text("'{}'::uuid[]")
    )
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    request_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        Index("audit_events_created_at_id", "created_at", "id"),
        Index("audit_events_action", "action", "created_at"),
        Index("audit_events_target_ids", "target_ids", postgresql_using="gin"),
        CheckConstraint("actor_type IN ('api_key', 'cli', 'system')", name="actor_type_known"),
    )


#: The whole ledger, live and archived entries as one (a view, migration 0003): every
#: reader of history uses it, so archiving changes no answer. Not in ``Base.metadata``:
#: it is not a table the migrations compare against the models.
ledger_entries_all = table(
    "ledger_entries_all",
    column("id", BigInteger),
    column("wallet_id", UUID(as_uuid=True)),
    column("transaction_id", UUID(as_uuid=True)),
    column("transaction_type", Text),
    column("direction", Text),
    column("amount_minor", BigInteger),
    column("balance_after_minor", BigInteger),
    column("sequence", BigInteger),
    column("created_at", DateTime(timezone=True)),
    column("signed_amount_minor", BigInteger),
)


# Notifications (migration 0007): the transactional outbox of events, webhook
# endpoints and one delivery per (event, endpoint). docs/webhooks.md.

#: The event types of docs/api.md's "Webhooks", in the order the API lists them: the one list
#: (the events table's CHECK, the webhook endpoint filters, the OpenAPI document).
EventType = Literal[
    "transaction.completed",
    "transaction.failed",
    "transaction.held",
    "transaction.voided",
    "transaction.expired",
    "transaction.reversed",
    "transaction.canceled",
    "balance_monitor.triggered",
    "balance_monitor.cleared",
    "reconciliation.mismatch",
    "reconciliation.error",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


class Event(Base):
    """A status change the API contract names, appended in the transaction that made it.

    A transaction's event keeps the columns that change (``status`` ..
    ``completed_at``) as they were at the change; the rest of the Transaction
    object never changes, so the event is rendered from the transaction (live
    or archived) with these laid over it. A reconciliation event names its run,
    which no longer changes once it has ended. ``api_key_id`` is the key that
    submitted the transaction (a service key sees its own events only).
    """

    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    transaction_id: Mapped[uuid.UUID | None] = mapped_column()
    reconciliation_run_id: Mapped[uuid.UUID | None] = mapped_column()
    api_key_id: Mapped[uuid.UUID | None] = mapped_column()
    status: Mapped[str] = mapped_column(Text)
    failure_code: Mapped[str | None] = mapped_column(Text)
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime | None] = mapped_column()
    completed_at: Mapped[dt.datetime | None] = mapped_column()
    #: The transaction's ``reversed_minor`` at the change (migration 0013; None before it).
    reversed_minor: Mapped[int | None] = mapped_column(BigInteger)
    #: A balance monitor's event: the monitor, and what it and its wallet were at the
    #: change (``shared.services.monitors``; migration 0015).
    balance_monitor_id: Mapped[uuid.UUID | None] = mapped_column()
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        Index("events_created_at_id", "created_at", "id"),
        Index("events_api_key_created_at_id", "api_key_id", "created_at", "id"),
        Index("events_transaction", "transaction_id"),
        CheckConstraint(
            "type IN (" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + ")", name="event_type_known"
        ),
    )


class WebhookEndpoint(Base):
    """A receiver of events: its URL, the types it wants, and its signing secret.

    ``secret`` (``whsec_`` + base64 of 32 random bytes, Standard Webhooks) is
    kept as issued because signing needs it; the API shows it once, at
    creation. ``failing_since`` is the first failure after the last success,
    ``consecutive_failures`` the attempts failed since, and ``paused_until``
    when a failing endpoint may be tried again (migration 0009); past both
    ``TALLY_WEBHOOK_DISABLE_AFTER_FAILURES`` and ``..._AFTER_SECONDS`` the
    endpoint is disabled.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'enabled'"))
    secret: Mapped[str] = mapped_column(Text)
    failing_since: Mapped[dt.datetime | None] = mapped_column()
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    paused_until: Mapped[dt.datetime | None] = mapped_column()
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        Index("webhook_endpoints_created_at_id", "created_at", "id"),
        CheckConstraint("status IN ('enabled', 'disabled')", name="endpoint_status_known"),
    )


class WebhookDelivery(Base):
    """One event to one endpoint: ``pending`` until a 2xx (``succeeded``) or the window ends (``failed``).

    ``next_attempt_at`` is when the next attempt is due; an attempt in flight
    moves it a lease ahead, so a worker that dies mid-request is retried by the
    delivery sweep.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column()
    delivered_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="webhook_deliveries_event_endpoint"),
        Index("webhook_deliveries_endpoint_created_at_id", "endpoint_id", "created_at", "id"),
        Index(
            "webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "webhook_deliveries_endpoint_due",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="delivery_status_known"
        ),
    )


class BalanceMonitor(Base):
    """A condition on one wallet's balance or available balance, edge-triggered (migration 0015).

    ``value_minor`` is the threshold in the wallet's minor units; ``state`` is
    ``triggered`` while ``field <operator> value`` holds, since
    ``triggered_at``, and ``clear`` otherwise (``shared.ledger.monitors``).
    ``api_key_id`` is the key that created it: its events are that key's.
    """

    __tablename__ = "balance_monitors"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    wallet_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("wallets.id"))
    field: Mapped[str] = mapped_column(Text)
    operator: Mapped[str] = mapped_column(Text)
    value_minor: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default=text("'clear'"))
    triggered_at: Mapped[dt.datetime | None] = mapped_column()
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()

    __table_args__ = (
        Index("balance_monitors_wallet_created_at_id", "wallet_id", "created_at", "id"),
        Index("balance_monitors_created_at_id", "created_at", "id"),
        CheckConstraint("field IN ('balance', 'available_balance')", name="monitor_field_known"),
        CheckConstraint("operator IN ('lt', 'lte', 'gt', 'gte')", name="monitor_operator_known"),
        CheckConstraint("state IN ('clear', 'triggered')", name="monitor_state_known"),
        CheckConstraint(
            "(state = 'triggered') = (triggered_at IS NOT NULL)", name="monitor_triggered_at"
        ),
    )


class ApplyClaim(Base):
    """The apply stream's claim in flight: the transactions its current attempt took (migration 0018).

    The claim transaction writes it (one row per stream, ``stream`` being
    ``shared.services.processor.STREAM_LOCK_KEY``) and the apply transaction
    deletes it in its commit. A row that is still there when the next claim
    looks is an attempt that never finished (a killed worker, a lost
    connection, a failed commit): that claim adds one to the ``attempts`` of
    its transactions still pending. One row per batch instead of an
    ``attempts`` update of every claimed transaction (docs/architecture.md,
    "The apply stream").
    """

    __tablename__ = "apply_claims"

    stream: Mapped[str] = mapped_column(Text, primary_key=True)
    transaction_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)))
    claimed_at: Mapped[dt.datetime] = _now()
