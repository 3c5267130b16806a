"""Scheduled transactions: ``scheduled_at``, statuses ``scheduled`` and ``canceled``.

A transaction submitted with a future ``scheduled_at`` waits as ``scheduled``
until beat releases it to ``pending`` (docs/api.md, "Scheduled
transactions"); the partial index holds only the waiting ones, which is what
the release reads (``WHERE status = 'scheduled' AND scheduled_at <= now()``).
``transactions_archive`` gets the column too: the archive tables keep the
live tables' columns. A cancel appends ``transaction.canceled``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
# After 0013: both replace the events' type check, so their order must be fixed.
down_revision = "0013"
branch_labels = None
depends_on = None

_STATUSES = "'pending', 'held', 'completed', 'failed', 'voided', 'expired'"
_EVENT_TYPES = (
    "'transaction.completed', 'transaction.failed', 'transaction.held', "
    "'transaction.voided', 'transaction.expired', 'transaction.reversed', "
    "'reconciliation.mismatch', 'reconciliation.error'"
)


def upgrade() -> None:
    for table in ("transactions", "transactions_archive"):
        op.add_column(table, sa.Column("scheduled_at", sa.DateTime(timezone=True)))
    op.drop_constraint("status_known", "transactions", type_="check")
    op.create_check_constraint(
        "status_known", "transactions", f"status IN ({_STATUSES}, 'scheduled', 'canceled')"
    )
    op.create_index(
        "transactions_scheduled_at",
        "transactions",
        ["scheduled_at"],
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_constraint("event_type_known", "events", type_="check")
    op.create_check_constraint(
        "event_type_known", "events", f"type IN ({_EVENT_TYPES}, 'transaction.canceled')"
    )


def downgrade() -> None:
    # A waiting transaction has no status to go back to: releasing it would
    # move money before its time, so the downgrade waits until none waits.
    waiting = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM transactions WHERE status = 'scheduled'")
    )
    if waiting:
        raise RuntimeError(f"{waiting} scheduled transactions wait: cancel them, or wait for them")
    # A canceled one moved nothing: it reads as failed without a failure code.
    for table in ("transactions", "transactions_archive"):
        op.execute(
            f"UPDATE {table} SET status = 'failed', "
            "failure_message = 'canceled before it was due' WHERE status = 'canceled'"
        )
    op.execute("DELETE FROM events WHERE type = 'transaction.canceled'")
    op.drop_constraint("event_type_known", "events", type_="check")
    op.create_check_constraint("event_type_known", "events", f"type IN ({_EVENT_TYPES})")
    op.drop_index("transactions_scheduled_at", table_name="transactions")
    op.drop_constraint("status_known", "transactions", type_="check")
    op.create_check_constraint("status_known", "transactions", f"status IN ({_STATUSES})")
    for table in ("transactions", "transactions_archive"):
        op.drop_column(table, "scheduled_at")
