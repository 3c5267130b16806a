"""The audit log: one append-only row per operator action.

Every ops action (retry, bulk retry, freeze and unfreeze, key creation and
revocation, a reconciliation started by hand) appends a row in the same
database transaction as the action itself, so the log never shows an action
that did not happen nor misses one that did. A trigger rejects UPDATE, DELETE
and TRUNCATE, as it does for ``ledger_entries``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor_type", sa.Text(), nullable=False),
        # No foreign key: the log outlives whatever it names.
        sa.Column("actor_key_id", UUID(as_uuid=True)),
        sa.Column("actor_name", sa.Text(), nullable=False),
        sa.Column(
            "target_ids",
            ARRAY(UUID(as_uuid=True)),
            server_default=sa.text("'{}'::uuid[]"),
            nullable=False,
        ),
        sa.Column("details", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("request_id", sa.Text()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("actor_type IN ('api_key', 'cli')", name="actor_type_known"),
    )
    op.create_index("audit_events_created_at_id", "audit_events", ["created_at", "id"])
    op.create_index("audit_events_action", "audit_events", ["action", "created_at"])
    op.create_index(
        "audit_events_target_ids", "audit_events", ["target_ids"], postgresql_using="gin"
    )
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit events are append-only: % rejected', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION audit_events_append_only()")
