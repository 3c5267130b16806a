"""Drop ``transactions_pending_lane``: no query reads pending transactions by lane.

The one apply stream reads the pending head by ``lane_sequence`` alone
(``transactions_pending_sequence``). The lane index only cost a btree entry
per accepted transaction, which the intake pays on its hot path.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("transactions_pending_lane", table_name="transactions")


def downgrade() -> None:
    op.create_index(
        "transactions_pending_lane",
        "transactions",
        ["lane_wallet_id", "lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )
