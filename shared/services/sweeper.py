"""The stuck-transaction sweep: find shards whose pending work has waited too long.

A broker message can be lost (Redis emptied or restarted without persistence,
a worker's main process killed with prefetched messages) or never sent (the
broker was down at intake, the API process died before its signal thread
flushed). The sweep finds every shard with a transaction still ``pending``
after ``age_seconds`` and the caller publishes the shard again; draining is
idempotent, so a shard published twice costs one empty drain.
This is what bounds the time to a terminal status (design.md invariant 4).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.states import TransactionStatus
from shared.models import Transaction


def stalled_shards(session: Session, *, age_seconds: float) -> list[int]:
    """Return the shards holding a transaction pending for over ``age_seconds``.

    Args:
        age_seconds: how long a transaction may wait since it was accepted (or
            reopened by an ops retry) before its shard is published again. A
            shard being drained right now may be published too: its drain
            finds the shard locked and ends at once.
    """
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_seconds)
    return list(
        session.scalars(
            select(Transaction.shard)
            .where(
                Transaction.status == TransactionStatus.PENDING,
                Transaction.updated_at < cutoff,
            )
            .group_by(Transaction.shard)
            .order_by(Transaction.shard)
        )
    )
