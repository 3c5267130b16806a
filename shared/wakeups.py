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
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from shared.redis_client import get_redis

#: The pub/sub channel; each message is space-separated transaction ids.
SETTLED_CHANNEL = "tally:settled"

_log = structlog.get_logger(__name__)


def publish_settled(transaction_ids: Sequence[uuid.UUID]) -> None:
    """Announce that ``transaction_ids`` left ``pending``; log, never raise, on a Redis error."""
    try:
        get_redis().publish(SETTLED_CHANNEL, " ".join(str(i) for i in transaction_ids))
    except Exception as error:
        _log.warning("settled_publish_failed", error=str(error))
