"""Reversals: a transaction that moves money back along a completed one.

A reversal names its original in ``reverses_id`` (no foreign key: either side
archives alone, as a capture and its hold do). The original keeps the sum of
its completed reversals in ``reversed_minor``, written by the apply stream in
the batch that completes each reversal; the ``CHECK`` keeps it within the
original's amount whatever races (docs/api-conventions.md, "Reversals").
An event keeps ``reversed_minor`` as it was, like the other columns that change.
The downgrade is refused while any reversal or its event exists.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TYPES = "'deposit', 'withdrawal', 'transfer', 'hold', 'group', 'capture', 'void', 'expiry'"
_EVENT_TYPES = (
    "'transaction.completed', 'transaction.failed', 'transaction.held', "
    "'transaction.voided', 'transaction.expired', "
    "'reconciliation.mismatch', 'reconciliation.error'"
)


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, condition)


def upgrade() -> None:
    for table in ("transactions", "transactions_archive"):
        op.add_column(table, sa.Column("reverses_id", UUID(as_uuid=True)))
        op.add_column(
            table,
            sa.Column("reversed_minor", sa.BigInteger(), server_default="0", nullable=False),
        )
    _replace_check("transactions", "type_known", f"type IN ({_TYPES}, 'reversal')")
    op.create_check_constraint(
        "reversed_within_amount", "transactions", "reversed_minor BETWEEN 0 AND amount_minor"
    )
    op.create_check_constraint(
        "reversal_names_original", "transactions", "(type = 'reversal') = (reverses_id IS NOT NULL)"
    )
    # The archive job asks "is a reversal of this one still pending?".
    op.create_index(
        "transactions_reverses",
        "transactions",
        ["reverses_id"],
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
    )
    op.add_column("events", sa.Column("reversed_minor", sa.BigInteger()))
    _replace_check(
        "events", "event_type_known", f"type IN ({_EVENT_TYPES}, 'transaction.reversed')"
    )


def downgrade() -> None:
    # Refused (a check violation, nothing changed) while any reversal or its event
    # exists: a downgrade never drops ledger history.
    _replace_check("events", "event_type_known", f"type IN ({_EVENT_TYPES})")
    op.drop_column("events", "reversed_minor")
    op.drop_index("transactions_reverses", table_name="transactions")
    op.drop_constraint("reversal_names_original", "transactions", type_="check")
    op.drop_constraint("reversed_within_amount", "transactions", type_="check")
    _replace_check("transactions", "type_known", f"type IN ({_TYPES})")
    for table in ("transactions", "transactions_archive"):
        op.drop_column(table, "reversed_minor")
        op.drop_column(table, "reverses_id")
