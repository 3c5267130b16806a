"""Maintenance: daily balance snapshots, archive tables, reconciliation runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "balance_snapshots",
        sa.Column("wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "day"),
        sa.CheckConstraint("last_sequence > 0", name="snapshot_sequence_positive"),
    )

    # Archive tables: the live tables' columns, without foreign keys (a moved
    # transaction's wallets and entries may live in either table).
    op.create_table(
        "ledger_entries_archive",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("wallet_id", UUID(as_uuid=True), nullable=False),
        sa.Column("transaction_id", UUID(as_uuid=True), nullable=False),
        sa.Column("transaction_type", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("wallet_id", "sequence", name="ledger_entries_archive_wallet_sequence"),
    )
    op.create_index(
        "ledger_entries_archive_wallet_created_at",
        "ledger_entries_archive",
        ["wallet_id", "created_at"],
    )
    op.create_index(
        "ledger_entries_archive_transaction", "ledger_entries_archive", ["transaction_id"]
    )
    op.create_table(
        "transactions_archive",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_wallet_id", UUID(as_uuid=True)),
        sa.Column("destination_wallet_id", UUID(as_uuid=True)),
        sa.Column("lane_wallet_id", UUID(as_uuid=True), nullable=False),
        sa.Column("lane_sequence", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("metadata", JSONB(), nullable=False),
        sa.Column("failure_code", sa.Text()),
        sa.Column("failure_message", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("api_key_id", UUID(as_uuid=True), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("completed_at", TS),
    )
    op.create_index(
        "transactions_archive_created_at_id", "transactions_archive", ["created_at", "id"]
    )

    # The archive job finds old entries through this index: BRIN is a few pages
    # for the whole table and costs inserts almost nothing, because created_at
    # grows with the physical order of an append-mostly table.
    op.create_index(
        "ledger_entries_created_at_brin",
        "ledger_entries",
        ["created_at"],
        postgresql_using="brin",
    )

    # Archived rows are history: never updated, deleted or truncated.
    op.execute(
        """
        CREATE FUNCTION archive_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'archive tables are append-only: % on % rejected', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    for table in ("ledger_entries_archive", "transactions_archive"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION archive_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION archive_append_only()"
        )

    op.create_table(
        "reconciliation_runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("started_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("wallets_checked", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("mismatches", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column(
            "currency_totals", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("error", sa.Text()),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'mismatch', 'error')", name="run_status_known"
        ),
    )
    op.create_index(
        "reconciliation_runs_started_at_id", "reconciliation_runs", ["started_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("reconciliation_runs")
    op.drop_table("transactions_archive")
    op.drop_table("ledger_entries_archive")
    op.execute("DROP FUNCTION archive_append_only()")
    op.drop_index("ledger_entries_created_at_brin", table_name="ledger_entries")
    op.drop_table("balance_snapshots")
