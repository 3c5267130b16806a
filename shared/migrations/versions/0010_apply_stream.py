"""The apply stream's index: pending transactions in acceptance order, across all wallets.

One drain applies the oldest pending transactions of every wallet in
``lane_sequence`` order (docs/architecture.md, "The apply stream"); this
partial index is that head, read with ``ORDER BY lane_sequence LIMIT n``.
It holds only pending rows, so it stays as small as the backlog.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "transactions_pending_sequence",
        "transactions",
        ["lane_sequence"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("transactions_pending_sequence", table_name="transactions")
