"""Analyze the three busiest tables from a sample of 3,000 rows instead of 30,000.

``ANALYZE`` reads 300 rows for each unit of the largest statistics target of
a table's columns (PostgreSQL docs, "ANALYZE" and ``default_statistics_target``,
default 100): 30,000 rows, and every column's statistics computed over all of
them. ``transactions``, ``ledger_entries`` and ``events`` grow by a row or two
for every transaction, so while they are young, autovacuum analyzes them on
almost every visit (``autovacuum_naptime = 5s``, docs/operations.md), and an
analyze of ``transactions`` took 0.07–0.28 s of a core at 370 submissions a
second. The requests that arrive meanwhile wait for that core: in open-loop
traces most of the slowest hundredth fell inside those analyzes
(docs/benchmarks.md, series 23).

Every query of these tables finds its rows by a key or a partial index
(primary keys, the idempotency key, a wallet's id, ``status = 'pending'``,
time ranges) or reads them all (reconciliation's sums by wallet). A target
of 10 (a 3,000-row sample, ten most-common values, ten histogram buckets) tells the planner what those choices need, at a tenth of
the cost. Every column gets it, because one column left at the default
would bring back the 30,000-row sample for the whole table; a test
(``tests/integration/test_schema.py``) fails if a column is added without it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

#: The tables written for every transaction, and the statistics target of their columns.
SMALL_SAMPLE_TABLES = ("transactions", "ledger_entries", "events")
STATISTICS_TARGET = 10


def _set_target(target: int) -> None:
    inspector = sa.inspect(op.get_bind())
    for table in SMALL_SAMPLE_TABLES:
        for column in inspector.get_columns(table):
            op.execute(
                f'ALTER TABLE {table} ALTER COLUMN "{column["name"]}" SET STATISTICS {target}'
            )


def upgrade() -> None:
    _set_target(STATISTICS_TARGET)


def downgrade() -> None:
    _set_target(-1)  # the server's default_statistics_target
