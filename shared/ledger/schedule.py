"""The rule on a transaction's ``scheduled_at``: a zoned time at most 366 days ahead.

docs/api.md, "Scheduled transactions": deposit, withdrawal, transfer and
group bodies may carry ``scheduled_at``; such a transaction waits as
``scheduled`` until then. A time in the past (or now) is allowed and means
"apply at once".
"""

from __future__ import annotations

import datetime as dt

from shared.ledger.errors import ValidationFailed

#: How far ahead a transaction may be scheduled, in days (docs/api.md, "Scheduled transactions").
SCHEDULE_AHEAD_DAYS_MAX = 366


def check_scheduled_at(scheduled_at: dt.datetime, *, now: dt.datetime) -> dt.datetime:
    """Return ``scheduled_at`` in UTC if it is a time a transaction may be scheduled for.

    Args:
        scheduled_at: the requested time; must carry a time zone (RFC 3339).
        now: the current time, zoned.

    Returns:
        ``scheduled_at`` converted to UTC (a past time included: it applies at once).

    Raises:
        ValidationFailed: no time zone, or more than ``SCHEDULE_AHEAD_DAYS_MAX``
            days after ``now``; ``errors`` names the field ``scheduled_at``.
    """
    if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
        raise _invalid("scheduled_at must carry a time zone, e.g. 2026-11-22T10:00:00Z")
    if scheduled_at - now > dt.timedelta(days=SCHEDULE_AHEAD_DAYS_MAX):
        raise _invalid(f"scheduled_at must be at most {SCHEDULE_AHEAD_DAYS_MAX} days ahead")
    return scheduled_at.astimezone(dt.UTC)


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": "scheduled_at", "message": message}])
