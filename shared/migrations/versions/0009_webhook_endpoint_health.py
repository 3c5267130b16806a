"""Webhook endpoint health: consecutive failures, a pause while failing, system audit actors.

``consecutive_failures`` counts the attempts that failed since the endpoint's
last success; ``paused_until`` is when a failing endpoint may be tried again
(exponential backoff per endpoint, not per delivery), so a dead receiver
costs one attempt per pause instead of one per event. Reaching
``TALLY_WEBHOOK_DISABLE_AFTER_FAILURES`` failures, failing for
``TALLY_WEBHOOK_DISABLE_AFTER_SECONDS``, disables it; the audit log records
that with the actor ``system``. The partial index serves the delivery
sweep's per-endpoint scan of due deliveries (docs/webhooks.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
# webhook_endpoints comes from 0007 and audit_events from 0006, other branches.
depends_on = ("0006", "0007")


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints",
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("webhook_endpoints", sa.Column("paused_until", sa.DateTime(timezone=True)))
    op.create_index(
        "webhook_deliveries_endpoint_due",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_constraint("actor_type_known", "audit_events", type_="check")
    op.create_check_constraint(
        "actor_type_known", "audit_events", "actor_type IN ('api_key', 'cli', 'system')"
    )


def downgrade() -> None:
    op.drop_constraint("actor_type_known", "audit_events", type_="check")
    op.create_check_constraint(
        "actor_type_known", "audit_events", "actor_type IN ('api_key', 'cli')"
    )
    op.drop_index("webhook_deliveries_endpoint_due", table_name="webhook_deliveries")
    op.drop_column("webhook_endpoints", "paused_until")
    op.drop_column("webhook_endpoints", "consecutive_failures")
