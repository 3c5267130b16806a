"""Notifications: the events outbox, webhook endpoints and their deliveries.

Every status change the API contract names appends a row to ``events`` in the
database transaction that made it (a transactional outbox), and one
``webhook_deliveries`` row for each enabled endpoint subscribed to its type, in
the same statement. Events have no foreign key to transactions or runs, so
either side archives alone. Deleting an endpoint deletes its deliveries.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

_EVENT_TYPES = (
    "'transaction.completed', 'transaction.failed', 'transaction.held', "
    "'transaction.voided', 'transaction.expired', "
    "'reconciliation.mismatch', 'reconciliation.error'"
)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("transaction_id", UUID(as_uuid=True)),
        sa.Column("reconciliation_run_id", UUID(as_uuid=True)),
        sa.Column("api_key_id", UUID(as_uuid=True)),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("failure_code", sa.Text()),
        sa.Column("failure_message", sa.Text()),
        sa.Column("attempts", sa.Integer()),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(f"type IN ({_EVENT_TYPES})", name="event_type_known"),
    )
    op.create_index("events_created_at_id", "events", ["created_at", "id"])
    op.create_index("events_api_key_created_at_id", "events", ["api_key_id", "created_at", "id"])
    op.create_index("events_transaction", "events", ["transaction_id"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", JSONB(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("status", sa.Text(), server_default=sa.text("'enabled'"), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="endpoint_status_known"),
    )
    op.create_index("webhook_endpoints_created_at_id", "webhook_endpoints", ["created_at", "id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), sa.ForeignKey("events.id"), nullable=False),
        sa.Column(
            "endpoint_id",
            UUID(as_uuid=True),
            sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("event_id", "endpoint_id", name="webhook_deliveries_event_endpoint"),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="delivery_status_known"
        ),
    )
    op.create_index(
        "webhook_deliveries_endpoint_created_at_id",
        "webhook_deliveries",
        ["endpoint_id", "created_at", "id"],
    )
    # The delivery sweep reads the pending deliveries that are due.
    op.create_index(
        "webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("events")
