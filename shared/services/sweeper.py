"""The stuck-transaction sweep: find lanes whose pending work has waited too long.

A broker message can be lost (Redis restarted without persistence, a worker's
main process killed with prefetched messages) or never sent (the broker was
down at intake). The sweep finds every lane with a transaction still
``pending`` after ``age_seconds`` and the caller publishes the lane again;
draining is idempotent, so a lane published twice costs one empty drain.
This is what bounds the time to a terminal status (design.md invariant 4).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.states import TransactionStatus
from shared.models import Transaction


def stalled_lanes(session: Session, *, age_seconds: float, limit: int = 10_000) -> list[uuid.UUID]:
    """Return the lanes holding a transaction pending, and untouched, for over ``age_seconds``.

    Args:
        age_seconds: how long a transaction may wait since it was accepted or
            last attempted before its lane is published again.
        limit: at most this many lanes per sweep (the next sweep takes the rest).
    """
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_seconds)
    return list(
        session.scalars(
            select(Transaction.lane_wallet_id)
            .where(
                Transaction.status == TransactionStatus.PENDING,
                Transaction.updated_at < cutoff,
            )
            .group_by(Transaction.lane_wallet_id)
            .limit(limit)
        )
    )
