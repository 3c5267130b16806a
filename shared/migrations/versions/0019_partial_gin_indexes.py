"""Make the GIN indexes of ``transactions`` partial: no entry for a missing ``legs`` or empty ``metadata``.

A GIN index keeps an entry even for a NULL or empty value (PostgreSQL docs,
"GIN Indexes": "null" and "empty" items), so every transaction that intake
records added one to ``transactions_legs`` (only a group has legs) and one to
``transactions_metadata`` (most have no metadata), on the intake's hot path,
and vacuum merged them into one ever-growing posting tree. The queries these
indexes serve never look for those values: ``legs @> ...`` is strict, so it
implies ``legs IS NOT NULL``, and the metadata filter says ``metadata <>
'{}'`` beside its pairs (``shared.models.HAS_METADATA``; docs/benchmarks.md,
series 18).

Building an index holds a SHARE lock on ``transactions``, so intake waits
while it is built. On a large table build them beforehand without blocking
writes, under other names, then swap: ``CREATE INDEX CONCURRENTLY
transactions_metadata_partial ON transactions USING gin (metadata
jsonb_path_ops) WHERE metadata <> '{}'::jsonb``, ``DROP INDEX CONCURRENTLY
transactions_metadata``, ``ALTER INDEX transactions_metadata_partial RENAME TO
transactions_metadata``, and the same for ``legs`` with ``WHERE legs IS NOT
NULL``; this migration then finds both as they should be and leaves them.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_PARTIAL = {
    "transactions_legs": ("legs", "legs IS NOT NULL"),
    "transactions_metadata": ("metadata", "metadata <> '{}'::jsonb"),
}


def upgrade() -> None:
    for name, (column, predicate) in _PARTIAL.items():
        op.execute(
            f"""
            DO $$ BEGIN
                IF NOT EXISTS (
                    SELECT FROM pg_indexes WHERE indexname = '{name}'
                    AND indexdef LIKE '%WHERE%'
                ) THEN
                    DROP INDEX IF EXISTS {name};
                    CREATE INDEX {name} ON transactions
                        USING gin ({column} jsonb_path_ops) WHERE {predicate};
                END IF;
            END $$
            """
        )


def downgrade() -> None:
    for name, (column, _) in _PARTIAL.items():
        op.drop_index(name, table_name="transactions")
        op.create_index(
            name,
            "transactions",
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "jsonb_path_ops"},
        )
