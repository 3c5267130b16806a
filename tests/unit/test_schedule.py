"""The ``scheduled_at`` rule: a zoned time at most 366 days ahead; a past one applies at once."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.ledger.errors import ValidationFailed
from shared.ledger.schedule import SCHEDULE_AHEAD_DAYS_MAX, check_scheduled_at

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
SGT = dt.timezone(dt.timedelta(hours=8))


@pytest.mark.parametrize(
    "scheduled_at",
    [
        NOW + dt.timedelta(seconds=1),
        NOW + dt.timedelta(days=SCHEDULE_AHEAD_DAYS_MAX),
        NOW,
        NOW - dt.timedelta(days=1000),
    ],
    ids=["a second ahead", "exactly 366 days ahead", "now", "long past"],
)
def test_check_scheduled_at_accepts_times_up_to_366_days_ahead(scheduled_at: dt.datetime) -> None:
    assert check_scheduled_at(scheduled_at, now=NOW) == scheduled_at


def test_check_scheduled_at_returns_utc() -> None:
    at = dt.datetime(2026, 12, 24, 9, 0, tzinfo=SGT)
    result = check_scheduled_at(at, now=NOW)
    assert result == at and result.utcoffset() == dt.timedelta(0) and result.hour == 1


@pytest.mark.parametrize(
    ("scheduled_at", "message"),
    [
        (NOW + dt.timedelta(days=SCHEDULE_AHEAD_DAYS_MAX, microseconds=1), "at most 366 days"),
        (NOW + dt.timedelta(days=400), "at most 366 days"),
        (dt.datetime(2026, 12, 24, 9, 0), "time zone"),
    ],
    ids=["a microsecond past the bound", "400 days ahead", "no zone"],
)
def test_check_scheduled_at_refuses_naming_the_field(
    scheduled_at: dt.datetime, message: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_scheduled_at(scheduled_at, now=NOW)
    assert message in raised.value.detail
    assert [e["field"] for e in raised.value.errors] == ["scheduled_at"]
