"""Add ``apply_claims``: the apply stream records its claim in one row, not in every claimed row.

A claim used to add one to ``attempts`` of every transaction it took, in a
commit of its own: one row version per transaction, before the apply wrote
another. Now the claim writes one row naming the batch, the apply deletes it
in its own commit and counts the finished attempt in the status update it
makes anyway. A row left behind names an attempt that died; the next claim
counts it (``shared.services.processor.claim_batch``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apply_claims",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column(
            "transaction_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=False
        ),
        sa.Column(
            "claimed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("apply_claims")
