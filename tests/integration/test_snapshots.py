"""Daily balance snapshots: one row per wallet and closed day with entries, idempotent, catching up."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from sqlalchemy import text

from shared import db
from shared.services.snapshots import take_snapshots
from shared.services.wallets import balance_as_of
from tests.integration.ledger_history import Step, utc_midnight, write_history

WalletFactory = Callable[..., uuid.UUID]


def _snapshots(wallet_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, dt.date], tuple[int, int]]:
    with db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT wallet_id, day, balance_minor, last_sequence FROM balance_snapshots "
                "WHERE wallet_id = ANY(:ids)"
            ),
            {"ids": wallet_ids},
        ).all()
    return {(r.wallet_id, r.day): (r.balance_minor, r.last_sequence) for r in rows}


def _history(wallet_factory: WalletFactory) -> tuple[uuid.UUID, uuid.UUID]:
    """Two wallets with entries 5, 3 (twice) and 0 days ago, and a quiet day 4 days ago."""
    a, b = wallet_factory(), wallet_factory()
    hour = dt.timedelta(hours=1)
    write_history(
        [
            Step("deposit", 10_000, utc_midnight(5) + hour, destination=a),
            Step("transfer", 2_500, utc_midnight(5) + 2 * hour, source=a, destination=b),
            Step("transfer", 1_000, utc_midnight(3), source=b, destination=a),  # exactly midnight
            Step("withdrawal", 400, utc_midnight(2) - dt.timedelta(microseconds=1), source=a),
            Step("deposit", 7, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1), destination=b),
        ]
    )
    return a, b


def test_take_snapshots_records_the_end_of_each_closed_day_with_entries(
    wallet_factory: WalletFactory,
) -> None:
    a, b = _history(wallet_factory)
    with db.transaction() as session:
        summary = take_snapshots(session)
    assert summary.through_day == utc_midnight(1).date()
    assert summary.snapshots_created >= 4
    day = {n: utc_midnight(n).date() for n in range(6)}
    assert _snapshots([a, b]) == {
        (a, day[5]): (7_500, 2),
        (b, day[5]): (2_500, 1),
        # The midnight entry opens day 3; the one a microsecond before midnight closes it.
        (a, day[3]): (8_100, 4),
        (b, day[3]): (1_500, 2),
    }


def test_take_snapshots_twice_creates_nothing_the_second_time(
    wallet_factory: WalletFactory,
) -> None:
    a, b = _history(wallet_factory)
    with db.transaction() as session:
        take_snapshots(session)
    first = _snapshots([a, b])
    with db.transaction() as session:
        assert take_snapshots(session).snapshots_created == 0
    assert _snapshots([a, b]) == first


def test_take_snapshots_catches_up_missed_days_one_call_at_a_time(
    wallet_factory: WalletFactory,
) -> None:
    a, b = _history(wallet_factory)
    with db.transaction() as session:
        take_snapshots(session, through_day=utc_midnight(4).date())
    assert set(_snapshots([a, b])) == {(a, utc_midnight(5).date()), (b, utc_midnight(5).date())}
    with db.transaction() as session:
        take_snapshots(session, through_day=dt.date.today() + dt.timedelta(days=30))
    assert len(_snapshots([a, b])) == 4  # never today's: that day is not closed


def test_balance_as_of_is_the_same_with_and_without_snapshots(
    wallet_factory: WalletFactory,
) -> None:
    a, b = _history(wallet_factory)
    probes = [utc_midnight(n) + dt.timedelta(microseconds=d) for n in range(7) for d in (-1, 0, 1)]
    probes += [utc_midnight(5) + dt.timedelta(hours=h) for h in (1, 2, 3)]
    probes.append(dt.datetime.now(dt.UTC))

    def read() -> list[int]:
        with db.transaction() as session:
            return [balance_as_of(session, w, t) for w in (a, b) for t in probes]

    before = read()
    with db.transaction() as session:
        take_snapshots(session)
    assert read() == before
    assert before[: len(probes)][-1] == 8_100 and before[-1] == 1_507


def test_take_snapshots_of_a_wallet_without_entries_creates_none(
    wallet_factory: WalletFactory,
) -> None:
    quiet = wallet_factory()
    with db.transaction() as session:
        take_snapshots(session)
    assert _snapshots([quiet]) == {}
