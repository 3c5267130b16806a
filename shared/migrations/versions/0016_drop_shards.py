"""Drop the shards: the one apply stream reads no shard and no group lane.

The stream applies every pending transaction in ``lane_sequence`` order
(docs/architecture.md, "The apply stream"), so nothing reads
``transactions.shard``, its index ``transactions_pending_shard``,
``transactions_archive.shard`` or ``group_lanes`` (the extra lanes of pending
groups) any more.

The downgrade puts them back empty: every row in shard 0 and no group lane,
which the sharded code applied (more slowly, a group without waiting for its
other wallets' older debits).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("group_lanes")  # its indexes go with it
    op.drop_index("transactions_pending_shard", table_name="transactions")
    op.drop_column("transactions", "shard")
    op.drop_column("transactions_archive", "shard")


def downgrade() -> None:
    op.add_column(
        "transactions_archive",
        sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False),
    )
    op.alter_column("transactions_archive", "shard", server_default=None)
    op.add_column(
        "transactions", sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False)
    )
    op.create_index(
        "transactions_pending_shard",
        "transactions",
        ["shard", "lane_sequence"],
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
