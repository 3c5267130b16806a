"""One view of the whole ledger: live and archived entries, with the signed amount.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    "id, wallet_id, transaction_id, transaction_type, direction, amount_minor, "
    "balance_after_minor, sequence, created_at, "
    "CASE direction WHEN 'debit' THEN -amount_minor ELSE amount_minor END AS signed_amount_minor"
)


def upgrade() -> None:
    # A plain UNION ALL view: PostgreSQL flattens it into an append of the two
    # tables and pushes each query's conditions into both, so their indexes serve.
    op.execute(
        f"CREATE VIEW ledger_entries_all AS SELECT {_COLUMNS} FROM ledger_entries "
        f"UNION ALL SELECT {_COLUMNS} FROM ledger_entries_archive"
    )


def downgrade() -> None:
    op.execute("DROP VIEW ledger_entries_all")
