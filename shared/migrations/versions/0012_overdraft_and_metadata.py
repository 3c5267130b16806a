"""Overdraft limits per wallet, and the index behind the transactions' metadata filter.

``wallets.overdraft_limit_minor`` (default 0) is how far below zero debits and
holds may take a non-system wallet's available balance. The checks that kept
``balance_minor`` and ``balance_minor - held_minor`` at or above zero now keep
them at or above ``-overdraft_limit_minor`` (docs/architecture.md, invariant 2; the posting
rules enforce the same bound, ``shared.ledger.rules``). With every limit at its
default of zero they allow exactly what the old checks allowed.

``transactions_metadata`` is a GIN index with ``jsonb_path_ops`` on
``metadata``: it serves ``metadata @> '{"k": "v"}'``, the query of
``GET /v1/transactions?metadata[k]=v`` (docs/api-conventions.md, "Lists and
pagination"; docs/benchmarks.md, "Finding transactions by metadata").
Building it holds a SHARE lock on ``transactions``, so intake waits while it is
built. On a large table build it beforehand without blocking writes,
``CREATE INDEX CONCURRENTLY transactions_metadata ON transactions USING gin
(metadata jsonb_path_ops)``, and this migration leaves it as it is.

Downgrade drops both; it fails while a wallet's balance is below zero, as the
old checks would then not hold.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "wallets",
        sa.Column(
            "overdraft_limit_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.create_check_constraint(
        "overdraft_limit_not_negative", "wallets", "overdraft_limit_minor >= 0"
    )
    op.drop_constraint("balance_not_negative", "wallets", type_="check")
    op.drop_constraint("available_not_negative", "wallets", type_="check")
    op.create_check_constraint(
        "balance_within_overdraft",
        "wallets",
        "is_system OR balance_minor >= -overdraft_limit_minor",
    )
    op.create_check_constraint(
        "available_within_overdraft",
        "wallets",
        "is_system OR balance_minor - held_minor >= -overdraft_limit_minor",
    )
    op.create_index(
        "transactions_metadata",
        "transactions",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
        if_not_exists=True,  # built beforehand, concurrently (above)
    )


def downgrade() -> None:
    op.drop_index("transactions_metadata", table_name="transactions")
    op.drop_constraint("available_within_overdraft", "wallets", type_="check")
    op.drop_constraint("balance_within_overdraft", "wallets", type_="check")
    op.create_check_constraint(
        "available_not_negative", "wallets", "is_system OR balance_minor - held_minor >= 0"
    )
    op.create_check_constraint("balance_not_negative", "wallets", "is_system OR balance_minor >= 0")
    op.drop_constraint("overdraft_limit_not_negative", "wallets", type_="check")
    op.drop_column("wallets", "overdraft_limit_minor")
