"""Balance monitors, and the two event types their state changes append.

``balance_monitors`` holds each monitor's condition (``field``, ``operator``,
``value_minor``) and its edge-triggered ``state``; the apply path flips the
monitors of the wallets a batch changed in one statement that reads them by
``wallet_id`` (the index below). An event of a monitor keeps the monitor and
the wallet's balances as they were in ``snapshot`` and names the monitor in
``balance_monitor_id`` (docs/api-conventions.md, "Balance monitors").

The event-type check is rebuilt from the constraint as it stands, plus (or
minus, on downgrade) the two new types, so migrations that add other types
compose in either order. The downgrade drops the monitors' events and their
deliveries with the monitors.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_MONITOR_EVENT_TYPES = ("balance_monitor.triggered", "balance_monitor.cleared")


def _event_types() -> list[str]:
    """Return the event types the ``event_type_known`` check allows now, in its order."""
    definition = op.get_bind().scalar(
        sa.text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'event_type_known' AND conrelid = 'events'::regclass"
        )
    )
    return re.findall(r"'([^']+)'", definition or "")


def _replace_event_types(types: list[str]) -> None:
    op.drop_constraint("event_type_known", "events", type_="check")
    op.create_check_constraint(
        "event_type_known", "events", "type IN (" + ", ".join(f"'{t}'" for t in types) + ")"
    )


def upgrade() -> None:
    op.create_table(
        "balance_monitors",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("value_minor", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("state", sa.Text(), server_default=sa.text("'clear'"), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True)),
        sa.Column("api_key_id", UUID(as_uuid=True), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("field IN ('balance', 'available_balance')", name="monitor_field_known"),
        sa.CheckConstraint("operator IN ('lt', 'lte', 'gt', 'gte')", name="monitor_operator_known"),
        sa.CheckConstraint("state IN ('clear', 'triggered')", name="monitor_state_known"),
        sa.CheckConstraint(
            "(state = 'triggered') = (triggered_at IS NOT NULL)", name="monitor_triggered_at"
        ),
    )
    # The apply path's statement (wallet_id = ANY(...)) and the list by wallet, newest first.
    op.create_index(
        "balance_monitors_wallet_created_at_id",
        "balance_monitors",
        ["wallet_id", "created_at", "id"],
    )
    op.create_index("balance_monitors_created_at_id", "balance_monitors", ["created_at", "id"])
    op.add_column("events", sa.Column("balance_monitor_id", UUID(as_uuid=True)))
    op.add_column("events", sa.Column("snapshot", JSONB()))
    types = _event_types()
    _replace_event_types(types + [t for t in _MONITOR_EVENT_TYPES if t not in types])


def downgrade() -> None:
    old = list(_MONITOR_EVENT_TYPES)
    op.execute(
        sa.text(
            "DELETE FROM webhook_deliveries WHERE event_id IN "
            "(SELECT id FROM events WHERE type = ANY(:types))"
        ).bindparams(types=old)
    )
    op.execute(sa.text("DELETE FROM events WHERE type = ANY(:types)").bindparams(types=old))
    op.execute(
        sa.text(
            "UPDATE webhook_endpoints SET event_types = event_types - CAST(:types AS text[]) "
            "WHERE event_types ?| CAST(:types AS text[])"
        ).bindparams(types=old)
    )
    _replace_event_types([t for t in _event_types() if t not in _MONITOR_EVENT_TYPES])
    op.drop_column("events", "snapshot")
    op.drop_column("events", "balance_monitor_id")
    op.drop_table("balance_monitors")
