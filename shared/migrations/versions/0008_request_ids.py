"""The request id of the HTTP request that submitted each transaction.

Drain messages name a shard, not a transaction, so the worker cannot learn a
transaction's ``X-Request-Id`` from its message: the id is stored with the row
at intake (and replaced by an ops retry's), and the worker logs it with each
transaction it settles. Nullable, no default: adding it rewrites no row
(PostgreSQL docs, "ALTER TABLE", notes), and rows from before it, beat's
expiries and the CLI's retries have none.

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("transactions", "transactions_archive"):
        op.add_column(table, sa.Column("request_id", sa.Text()))


def downgrade() -> None:
    for table in ("transactions", "transactions_archive"):
        op.drop_column(table, "request_id")
