"""Ledger schema: currencies, wallets, api keys, transactions, append-only ledger entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "currencies",
        sa.Column("code", sa.String(3), primary_key=True),
        sa.Column("exponent", sa.SmallInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint("exponent BETWEEN 0 AND 4", name="exponent_range"),
    )
    op.create_table(
        "wallets",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("owner_ref", sa.Text()),
        sa.Column("currency", sa.String(3), sa.ForeignKey("currencies.code"), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("held_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("is_system", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("owner_ref", "currency", name="wallets_owner_currency_key"),
        sa.CheckConstraint("is_system OR balance_minor >= 0", name="balance_not_negative"),
        sa.CheckConstraint(
            "is_system OR balance_minor - held_minor >= 0", name="available_not_negative"
        ),
        sa.CheckConstraint("held_minor >= 0", name="held_not_negative"),
        sa.CheckConstraint("is_system = (owner_ref IS NULL)", name="system_has_no_owner"),
        sa.CheckConstraint("status IN ('active', 'frozen')", name="status_known"),
    )
    op.create_index(
        "wallets_one_system_per_currency",
        "wallets",
        ["currency"],
        unique=True,
        postgresql_where=sa.text("is_system"),
    )
    op.create_index("wallets_created_at_id", "wallets", ["created_at", "id"])

    op.create_table(
        "api_keys",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False, unique=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TS),
        sa.CheckConstraint("role IN ('service', 'ops')", name="role_known"),
    )

    op.execute("CREATE SEQUENCE transaction_lane_seq")
    op.create_table(
        "transactions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), sa.ForeignKey("currencies.code"), nullable=False),
        sa.Column("source_wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id")),
        sa.Column("destination_wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id")),
        sa.Column(
            "lane_wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), nullable=False
        ),
        sa.Column(
            "lane_sequence",
            sa.BigInteger(),
            server_default=sa.text("nextval('transaction_lane_seq')"),
            nullable=False,
        ),
        sa.Column("description", sa.Text()),
        sa.Column("metadata", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("failure_code", sa.Text()),
        sa.Column("failure_message", sa.Text()),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("api_key_id", UUID(as_uuid=True), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("completed_at", TS),
        sa.UniqueConstraint("api_key_id", "idempotency_key", name="transactions_idempotency_key"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        sa.CheckConstraint(
            "status IN ('pending', 'held', 'completed', 'failed', 'voided', 'expired')",
            name="status_known",
        ),
        sa.CheckConstraint(
            "type IN ('deposit', 'withdrawal', 'transfer', 'hold', 'group')", name="type_known"
        ),
    )
    op.create_index(
        "transactions_pending_lane",
        "transactions",
        ["lane_wallet_id", "lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "transactions_pending_updated_at",
        "transactions",
        ["updated_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("transactions_created_at_id", "transactions", ["created_at", "id"])
    op.create_index(
        "transactions_source_wallet", "transactions", ["source_wallet_id", "created_at"]
    )
    op.create_index(
        "transactions_destination_wallet", "transactions", ["destination_wallet_id", "created_at"]
    )

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("wallet_id", UUID(as_uuid=True), sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column(
            "transaction_id", UUID(as_uuid=True), sa.ForeignKey("transactions.id"), nullable=False
        ),
        sa.Column("transaction_type", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.clock_timestamp(), nullable=False),
        sa.UniqueConstraint("wallet_id", "sequence", name="ledger_entries_wallet_sequence"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint("sequence > 0", name="sequence_positive"),
        sa.CheckConstraint("direction IN ('debit', 'credit')", name="direction_known"),
    )
    op.create_index(
        "ledger_entries_wallet_created_at", "ledger_entries", ["wallet_id", "created_at"]
    )
    op.create_index("ledger_entries_transaction", "ledger_entries", ["transaction_id"])

    # Append-only ledger (docs/architecture.md, invariant 5): UPDATE is always rejected;
    # DELETE only inside a transaction that set tally.archiving = 'on' (the
    # archive job, which moves rows to the archive tables in the same transaction).
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('tally.archiving', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'ledger entries are append-only: % rejected', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_append_only()"
    )


def downgrade() -> None:
    op.drop_table("ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
    op.drop_table("transactions")
    op.execute("DROP SEQUENCE transaction_lane_seq")
    op.drop_table("api_keys")
    op.drop_table("wallets")
    op.drop_table("currencies")
