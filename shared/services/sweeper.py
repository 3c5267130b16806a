"""The stuck-transaction sweep: find shards whose pending work has waited too long.

A broker message can be lost (Redis emptied or restarted without persistence,
a worker's main process killed with prefetched messages) or never sent (the
broker was down at intake, the API process died before its signal thread
flushed). The sweep finds every shard with a transaction still ``pending``
after ``age_seconds`` and the caller publishes the shard again; draining is
idempotent, so a shard published twice costs one empty drain.
This is what bounds the time to a terminal status (design.md invariant 4).

The sweep also frees a shard whose lock is held by a stuck process: a
session holding a shard's lock while idle outside a transaction for over
``TALLY_SHARD_LOCK_IDLE_SECONDS`` is ended, so that the shard's drains, which
would otherwise end ``LockBusy`` for as long as it stays, apply again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.states import TransactionStatus
from shared.models import Transaction
from shared.services.processor import shard_lock_key


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


def release_stuck_shard_locks(
    session: Session, *, shard_count: int, idle_seconds: float
) -> dict[int, db.IdleLockHolder]:
    """End the sessions that hold a shard's lock while idle for over ``idle_seconds``.

    A drain holds its shard's lock only while it claims and applies; a holder
    idle outside a transaction that long is a stuck process
    (:func:`shared.db.end_idle_lock_holders`).

    Args:
        shard_count: ``TALLY_SHARD_COUNT``; shards ``0 .. shard_count - 1`` are looked at.
        idle_seconds: ``TALLY_SHARD_LOCK_IDLE_SECONDS``.

    Returns:
        The shards freed, each with the session that held it.
    """
    shards = {shard_lock_key(shard): shard for shard in range(shard_count)}
    holders = db.end_idle_lock_holders(session, list(shards), idle_seconds=idle_seconds)
    return {shards[holder.key]: holder for holder in holders}
