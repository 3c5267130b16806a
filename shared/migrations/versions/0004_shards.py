"""Shards: a drain applies the pending transactions of many lanes at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Pending rows get their real shard from `tally migrate` (reshard_pending),
    # which knows TALLY_SHARD_COUNT; terminal rows never need one.
    op.add_column(
        "transactions", sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "transactions_archive",
        sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.alter_column("transactions_archive", "shard", server_default=None)
    op.drop_index("transactions_pending_lane", table_name="transactions")
    op.create_index(
        "transactions_pending_shard",
        "transactions",
        ["shard", "lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("transactions_pending_shard", table_name="transactions")
    op.create_index(
        "transactions_pending_lane",
        "transactions",
        ["lane_wallet_id", "lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_column("transactions_archive", "shard")
    op.drop_column("transactions", "shard")
