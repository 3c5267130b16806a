"""Holds (capture, void, expiry) and multi-leg groups.

Capture, void and expiry are transactions of their own (TigerBeetle's
post/void of a pending transfer): they name the hold in ``hold_id`` and run in
the hold's lane, so they are ordered, counted and swept like every other
debit. A group keeps its legs in ``legs`` and has one lane per wallet it
debits: its first in ``lane_wallet_id``, the others in ``group_lanes`` while it
is pending. ``hold_entries`` is the append-only ledger of held amounts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TYPES = "'deposit', 'withdrawal', 'transfer', 'hold', 'group', 'capture', 'void', 'expiry'"


def upgrade() -> None:
    # Room on each page for the claim's in-place update of ``attempts`` (a
    # heap-only tuple updates no index: PostgreSQL docs, "Heap-Only Tuples").
    op.execute("ALTER TABLE transactions SET (fillfactor = 80)")
    for table in ("transactions", "transactions_archive"):
        # No foreign key: a hold and its capture are archived independently.
        op.add_column(table, sa.Column("hold_id", UUID(as_uuid=True)))
        op.add_column(table, sa.Column("legs", JSONB()))
    op.drop_constraint("type_known", "transactions", type_="check")
    op.create_check_constraint("type_known", "transactions", f"type IN ({_TYPES})")
    op.create_index(
        "transactions_hold",
        "transactions",
        ["hold_id"],
        postgresql_where=sa.text("hold_id IS NOT NULL"),
    )
    # GET /v1/transactions?wallet_id= finds groups by their legs.
    op.create_index(
        "transactions_legs",
        "transactions",
        ["legs"],
        postgresql_using="gin",
        postgresql_ops={"legs": "jsonb_path_ops"},
    )
    # Reconciliation sums each wallet's open holds.
    op.create_index(
        "transactions_open_holds",
        "transactions",
        ["source_wallet_id"],
        postgresql_where=sa.text("type = 'hold' AND status = 'held'"),
    )
    # A group's applicability check asks "is anything older pending in this lane?".
    op.create_index(
        "transactions_pending_lane",
        "transactions",
        ["lane_wallet_id", "lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "group_lanes",
        sa.Column(
            "transaction_id", UUID(as_uuid=True), sa.ForeignKey("transactions.id"), primary_key=True
        ),
        sa.Column(
            "lane_wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), primary_key=True
        ),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
    )
    op.create_index("group_lanes_shard", "group_lanes", ["shard"])
    op.create_index("group_lanes_lane", "group_lanes", ["lane_wallet_id"])
    op.create_table(
        "hold_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("hold_id", UUID(as_uuid=True), nullable=False),
        sa.Column("transaction_id", UUID(as_uuid=True), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("held_after_minor", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.clock_timestamp(),
            nullable=False,
        ),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint("held_after_minor >= 0", name="held_after_not_negative"),
        sa.CheckConstraint("direction IN ('hold', 'release')", name="direction_known"),
    )
    op.create_index("hold_entries_wallet", "hold_entries", ["wallet_id", "id"])
    op.create_index("hold_entries_hold", "hold_entries", ["hold_id"])
    op.execute(
        """
        CREATE FUNCTION hold_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'hold entries are append-only: % rejected', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER hold_entries_append_only BEFORE UPDATE OR DELETE ON hold_entries "
        "FOR EACH ROW EXECUTE FUNCTION hold_entries_append_only()"
    )
    op.execute(
        "CREATE TRIGGER hold_entries_no_truncate BEFORE TRUNCATE ON hold_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION hold_entries_append_only()"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE transactions RESET (fillfactor)")
    op.drop_table("hold_entries")
    op.execute("DROP FUNCTION hold_entries_append_only()")
    op.drop_table("group_lanes")
    op.drop_index("transactions_pending_lane", table_name="transactions")
    op.drop_index("transactions_open_holds", table_name="transactions")
    op.drop_index("transactions_legs", table_name="transactions")
    op.drop_index("transactions_hold", table_name="transactions")
    op.drop_constraint("type_known", "transactions", type_="check")
    op.create_check_constraint(
        "type_known",
        "transactions",
        "type IN ('deposit', 'withdrawal', 'transfer', 'hold', 'group')",
    )
    for table in ("transactions", "transactions_archive"):
        op.drop_column(table, "legs")
        op.drop_column(table, "hold_id")
