"""Wake-ups for long-polls: the worker announces settled transactions on Redis pub/sub.

After each apply commit the worker publishes the ids it settled (those that
left ``pending``: completed, held or failed; docs/architecture.md, "Glossary")
on one channel; every API process keeps one subscription and wakes the requests
waiting on those ids (``api/asgi.py``). A wake-up is a hint, never the
truth: the woken request re-reads the row, and a lost wake-up (Redis down, a
process restarting) only means the request answers at its ``wait`` deadline
after one more read. PostgreSQL ``LISTEN/NOTIFY`` would work too, but
``NOTIFY`` takes a database-wide lock at commit (PostgreSQL docs, "NOTIFY"),
which would serialise every apply commit behind it.

The same round trip stores the stream's progress: the highest
``lane_sequence`` it has settled (``APPLIED_KEY``). Every transaction at or
below it has left ``pending``, because the stream applies in that order. The
API reads it to hold its answers back while the stream is far behind
(``shared.services.backpressure``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from shared.redis_client import get_redis

#: The pub/sub channel; each message is space-separated transaction ids.
SETTLED_CHANNEL = "tally:settled"

#: The highest ``lane_sequence`` the apply stream has settled (a decimal string).
APPLIED_KEY = "tally:applied-sequence"

_log = structlog.get_logger(__name__)


def publish_settled(transaction_ids: Sequence[uuid.UUID], applied_sequence: int) -> None:
    """Announce that ``transaction_ids`` left ``pending`` and store the stream's progress.

    Args:
        transaction_ids: the transactions one apply commit settled.
        applied_sequence: the highest ``lane_sequence`` settled so far: every
            transaction at or below it has left ``pending``.

    One round trip (a pipeline without MULTI); a Redis error is logged, never raised.
    """
    try:
        pipeline = get_redis().pipeline(transaction=False)
        pipeline.set(APPLIED_KEY, applied_sequence)
        pipeline.publish(SETTLED_CHANNEL, " ".join(str(i) for i in transaction_ids))
        pipeline.execute()
    except Exception as error:
        _log.warning("settled_publish_failed", error=str(error))


#: The longest a read of the stream's progress may take, in seconds: the API reads
#: it while requests wait, and a Redis that does not answer must not hold them.
PROGRESS_READ_TIMEOUT_SECONDS = 0.1


def read_applied_sequence() -> int | None:
    """Return the stream's progress (``APPLIED_KEY``); None when unknown or Redis is away.

    Takes at most ``PROGRESS_READ_TIMEOUT_SECONDS`` to answer. Never raises: a
    reader that cannot tell how far the stream is must not wait for it.
    """
    try:
        value = get_redis(PROGRESS_READ_TIMEOUT_SECONDS).get(APPLIED_KEY)
    except Exception as error:
        _log.warning("applied_sequence_unreadable", error=str(error))
        return None
    return None if value is None else int(value)
