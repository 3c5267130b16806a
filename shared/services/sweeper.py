"""The stuck-transaction sweep: tell whether pending work has waited too long.

A broker message can be lost (Redis emptied or restarted without persistence,
a worker's main process killed with prefetched messages) or never sent (the
broker was down at intake, the API process died before its signal thread
flushed). The sweep looks for a transaction still ``pending`` after
``age_seconds`` and the caller publishes a drain again; draining is
idempotent, so a drain published twice costs one empty drain. This is what
bounds the time to a terminal status (invariant 4, docs/architecture.md).

The sweep also frees the stream whose lock is held by a stuck process: a
session holding the stream's lock while idle outside a transaction for over
``TALLY_STREAM_LOCK_IDLE_SECONDS`` is ended, so that drains, which would
otherwise end ``LockBusy`` for as long as it stays, apply again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.states import TransactionStatus
from shared.models import Transaction
from shared.services.processor import STREAM_LOCK_KEY


def stream_stalled(session: Session, *, age_seconds: float) -> bool:
    """Tell whether a transaction has been pending for over ``age_seconds``.

    Args:
        age_seconds: how long a transaction may wait since it was accepted (or
            reopened by an ops retry) before a drain is published again. A
            stream being drained right now may be published too: that drain
            finds the stream locked and ends at once.
    """
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_seconds)
    return bool(
        session.scalar(
            select(
                exists().where(
                    Transaction.status == TransactionStatus.PENDING,
                    Transaction.updated_at < cutoff,
                )
            )
        )
    )


def release_stuck_stream_lock(session: Session, *, idle_seconds: float) -> db.IdleLockHolder | None:
    """End the session that holds the stream's lock while idle for over ``idle_seconds``.

    A drain holds the lock only while it claims and applies; a holder idle
    outside a transaction that long is a stuck process
    (:func:`shared.db.end_idle_lock_holders`).

    Args:
        idle_seconds: ``TALLY_STREAM_LOCK_IDLE_SECONDS``.

    Returns:
        The session ended, or None if none was.
    """
    holders = db.end_idle_lock_holders(session, [STREAM_LOCK_KEY], idle_seconds=idle_seconds)
    return holders[0] if holders else None
