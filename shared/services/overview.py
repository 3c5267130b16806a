"""Read models of the pipeline's state: the pending backlog and recent throughput.

The ops dashboard (``GET /v1/ops/overview``) reads both; the sweep reads the
backlog into the ``tally_pending_*`` gauges. Both are single index-backed
queries: the backlog counts rows of the partial index on pending transactions
(``transactions_pending_sequence``), and throughput reads transactions created in
the last hour through the ``created_at`` index, so neither scans the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import text
from sqlalchemy.orm import Session

#: Throughput counts transactions completed in the window among those created in
#: this long before it: one that waited longer to settle is left out, which keeps
#: the query on the ``created_at`` index.
_THROUGHPUT_CREATED_SECONDS_MAX = 3600


@dataclasses.dataclass(frozen=True, slots=True)
class Backlog:
    """The pending transactions now.

    Attributes:
        count: transactions in ``pending``.
        oldest_age_seconds: seconds since the oldest of them became pending
            (``updated_at``: its submission, or its ops retry or release from
            ``scheduled``, which accept it anew), 0.0 when none is pending.
    """

    count: int
    oldest_age_seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class MinuteThroughput:
    """Transactions that reached a terminal status in one UTC minute.

    Attributes:
        minute: the start of the minute (UTC).
        completed, failed: how many reached each; ``other``: voided, expired or canceled.
    """

    minute: dt.datetime
    completed: int
    failed: int
    other: int


_BACKLOG_SQL = text(
    """
SELECT count(*) AS pending_count,
       coalesce(extract(epoch FROM now() - min(updated_at)), 0) AS oldest_age_seconds
FROM transactions WHERE status = 'pending'
"""
)

_THROUGHPUT_SQL = text(
    """
SELECT date_trunc('minute', completed_at) AS minute,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status NOT IN ('completed', 'failed')) AS other
FROM transactions
WHERE created_at >= now() - make_interval(secs => CAST(:created_seconds AS double precision))
  AND completed_at >= date_trunc('minute', now()) - make_interval(mins => CAST(:minutes AS integer) - 1)
GROUP BY 1 ORDER BY 1
"""
)


def pending_backlog(session: Session) -> Backlog:
    """Return how many transactions are ``pending`` and the age of the oldest, in seconds."""
    row = session.execute(_BACKLOG_SQL).one()
    return Backlog(int(row.pending_count), max(0.0, float(row.oldest_age_seconds)))


def throughput(session: Session, *, minutes: int = 10) -> list[MinuteThroughput]:
    """Return per-minute counts of settled transactions for the last ``minutes`` minutes.

    One entry per UTC minute, oldest first, the current (partial) minute last;
    minutes with nothing settled are included with zeros.

    Args:
        minutes: the window, 1..60, counting the current minute.

    Raises:
        ValueError: ``minutes`` outside 1..60.
    """
    if not 1 <= minutes <= 60:
        raise ValueError(f"minutes must be 1..60, not {minutes}")
    rows = session.execute(
        _THROUGHPUT_SQL,
        {"minutes": minutes, "created_seconds": _THROUGHPUT_CREATED_SECONDS_MAX + 60 * minutes},
    ).all()
    found = {row.minute: row for row in rows}
    now = session.execute(text("SELECT date_trunc('minute', now())")).scalar_one()
    result = []
    for back in range(minutes - 1, -1, -1):
        minute = now - dt.timedelta(minutes=back)
        row = found.get(minute)
        result.append(
            MinuteThroughput(
                minute,
                int(row.completed) if row else 0,
                int(row.failed) if row else 0,
                int(row.other) if row else 0,
            )
        )
    return result
