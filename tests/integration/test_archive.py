"""The archive job moves old entries and transactions without changing any read."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from shared import db
from shared.models import LedgerEntry, Transaction
from shared.services.archive import archive_before
from shared.services.transactions import get_transaction
from shared.services.wallets import balance_as_of, get_wallet, list_entries
from tests.helpers import assert_ledger_consistent
from tests.integration.ledger_history import Step, utc_midnight, write_history

WalletFactory = Callable[..., uuid.UUID]
DAYS = 6  # histories run from DAYS days ago to yesterday
MICROSECONDS_PER_DAY = 86_400_000_000


def _entry_tuple(entry: LedgerEntry) -> tuple[Any, ...]:
    return tuple(getattr(entry, c.key) for c in inspect(LedgerEntry).column_attrs)


def _transaction_tuple(transaction: Transaction) -> tuple[Any, ...]:
    return tuple(getattr(transaction, c.key) for c in inspect(Transaction).column_attrs)


def observe(
    wallet_ids: list[uuid.UUID], transaction_ids: list[uuid.UUID], probes: list[dt.datetime]
) -> dict[str, Any]:
    """Read everything a client can read about these wallets through the service functions."""
    seen: dict[str, Any] = {"balances": [], "as_of": [], "entries": [], "transactions": []}
    with db.transaction() as session:
        for wallet_id in wallet_ids:
            wallet = get_wallet(session, wallet_id)
            seen["balances"].append((wallet.balance_minor, wallet.last_sequence))
            seen["as_of"].append([balance_as_of(session, wallet_id, t) for t in probes])
            cursor = None
            pages: list[tuple[Any, ...]] = []
            while True:  # small pages, so some page straddles the live/archive boundary
                rows, cursor = list_entries(session, wallet_id, limit=3, cursor=cursor)
                pages.extend(_entry_tuple(e) for e in rows)
                if cursor is None:
                    break
            seen["entries"].append(pages)
        for transaction_id in transaction_ids:
            seen["transactions"].append(
                _transaction_tuple(get_transaction(session, transaction_id))
            )
    return seen


def probes_for(steps: list[Step]) -> list[dt.datetime]:
    """Return the instants worth asking ``as_of`` about: around each step and each midnight."""
    one = dt.timedelta(microseconds=1)
    times = [t for s in steps for t in (s.at - one, s.at, s.at + one)]
    times += [utc_midnight(n) + d for n in range(DAYS + 2) for d in (-one, dt.timedelta(0))]
    return [*times, dt.datetime.now(dt.UTC)]


def _locations(wallet_ids: list[uuid.UUID]) -> dict[str, list[dt.datetime]]:
    with db.transaction() as session:
        return {
            table: list(
                session.scalars(
                    text(f"SELECT created_at FROM {table} WHERE wallet_id = ANY(:ids)"),
                    {"ids": wallet_ids},
                )
            )
            for table in ("ledger_entries", "ledger_entries_archive")
        }


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """Draw ``(steps, cutoff offset)``: steps as (kind, amount, at offset µs, wallet a, wallet b)."""
    span = DAYS * MICROSECONDS_PER_DAY
    # Midnights and their neighbours are where day arithmetic goes wrong.
    edges = [d * MICROSECONDS_PER_DAY + e for d in range(1, DAYS) for e in (-1, 0, 1)]
    offset = st.one_of(st.integers(0, span - 1), st.sampled_from(edges))
    step = st.tuples(
        st.sampled_from(["deposit", "deposit", "transfer", "transfer", "withdrawal"]),
        st.integers(1, 5_000),
        offset,
        st.integers(0, 2),
        st.integers(0, 2),
    )
    steps = draw(st.lists(step, min_size=1, max_size=25, unique_by=lambda s: s[2]))
    cutoff = draw(st.one_of(st.integers(-MICROSECONDS_PER_DAY, span + 2 * MICROSECONDS_PER_DAY),
                            st.sampled_from(edges)))  # fmt: skip
    return steps, cutoff


def _steps(raw: list[tuple[str, int, int, int, int]], wallets: list[uuid.UUID]) -> list[Step]:
    start = utc_midnight(DAYS)
    steps = []
    for kind, amount_minor, offset, a, b in raw:
        at = start + dt.timedelta(microseconds=offset)
        if kind == "transfer" and a == b:
            b = (a + 1) % len(wallets)
        steps.append(Step(kind, amount_minor, at, source=wallets[a], destination=wallets[b]))
    return steps


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=histories())
def test_archive_changes_no_read(
    drawn: tuple[list[tuple[str, int, int, int, int]], int], wallet_factory: WalletFactory
) -> None:
    raw, cutoff_offset = drawn
    wallets = [wallet_factory() for _ in range(3)]
    steps = _steps(raw, wallets)
    transaction_ids = write_history(steps)
    probes = probes_for(steps)
    before = observe(wallets, transaction_ids, probes)

    cutoff = utc_midnight(DAYS) + dt.timedelta(microseconds=cutoff_offset)
    summary = archive_before(cutoff=cutoff, chunk_size=4)
    event(f"entries archived: {'some' if summary.entries_archived else 'none'}")

    assert observe(wallets, transaction_ids, probes) == before
    assert summary.cutoff == min(cutoff, utc_midnight(0))
    where = _locations(wallets)
    assert all(t < summary.cutoff for t in where["ledger_entries_archive"])
    assert all(t >= summary.cutoff for t in where["ledger_entries"])
    assert archive_before(cutoff=cutoff, chunk_size=4).entries_archived == 0
    assert observe(wallets, transaction_ids, probes) == before


def test_archive_changes_no_api_answer(
    wallet_factory: WalletFactory, client: Any, service_headers: dict[str, str]
) -> None:
    a, b = wallet_factory(), wallet_factory()
    hour = dt.timedelta(hours=1)
    steps = [
        Step("deposit", 10_000, utc_midnight(4) + hour, destination=a),
        Step("transfer", 2_550, utc_midnight(4) + 2 * hour, source=a, destination=b),
        Step("withdrawal", 99_999, utc_midnight(3) + hour, source=b),  # fails: no entries
        Step("transfer", 1_005, utc_midnight(2) + hour, source=b, destination=a),
        Step("withdrawal", 40, utc_midnight(1) + hour, source=a),
    ]
    transaction_ids = write_history(steps)
    urls = [f"/v1/wallets/{w}" for w in (a, b)]
    urls += [f"/v1/wallets/{w}/entries?limit=2" for w in (a, b)]
    urls += [f"/v1/transactions/{t}" for t in transaction_ids]
    for t in probes_for(steps):
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        urls += [f"/v1/wallets/{w}/balance?as_of={stamp}" for w in (a, b)]

    def read_all() -> list[Any]:
        answers = []
        for url in urls:
            response = client.get(url, headers=service_headers)
            assert response.status_code == 200, (url, response.get_json())
            body = response.get_json()
            answers.append(body)
            while url.endswith("limit=2") and body["next_cursor"]:
                response = client.get(
                    f"{url}&cursor={body['next_cursor']}", headers=service_headers
                )
                body = response.get_json()
                answers.append(body)
        return answers

    before = read_all()
    summary = archive_before(cutoff=utc_midnight(2) + 2 * hour, chunk_size=3)
    assert summary.entries_archived >= 6 and summary.transactions_archived >= 3
    assert read_all() == before
    assert before[2]["data"][0]["balance_after"] == "84.15"
    assert_ledger_consistent()


def test_archive_keeps_transactions_with_live_entries_and_open_ones(
    wallet_factory: WalletFactory,
) -> None:
    a = wallet_factory()
    old = utc_midnight(3)
    (deposit,) = write_history([Step("deposit", 500, old, destination=a)])
    with db.transaction() as session:
        # A transaction older than the cutoff that is not terminal must stay.
        session.execute(
            text("UPDATE transactions SET status = 'pending' WHERE id = :id"), {"id": deposit}
        )
    archive_before(cutoff=old + dt.timedelta(hours=1), chunk_size=10)
    with db.transaction() as session:
        assert (
            session.scalar(text("SELECT status FROM transactions WHERE id = :id"), {"id": deposit})
            == "pending"
        )
        session.execute(
            text("UPDATE transactions SET status = 'completed' WHERE id = :id"), {"id": deposit}
        )
    archive_before(cutoff=old + dt.timedelta(hours=1), chunk_size=10)
    with db.transaction() as session:
        assert get_transaction(session, deposit).status == "completed"
        assert (
            session.scalar(
                text("SELECT count(*) FROM transactions_archive WHERE id = :id"), {"id": deposit}
            )
            == 1
        )


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger_entries_archive SET amount_minor = amount_minor + 1",
     "DELETE FROM ledger_entries_archive",
     "TRUNCATE ledger_entries_archive",
     "UPDATE transactions_archive SET attempts = attempts + 1",
     "DELETE FROM transactions_archive"],
)  # fmt: skip
def test_archive_tables_are_append_only(statement: str, wallet_factory: WalletFactory) -> None:
    a = wallet_factory()
    write_history([Step("deposit", 500, utc_midnight(3), destination=a)])
    archive_before(cutoff=utc_midnight(2), chunk_size=10)
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text("SELECT set_config('tally.archiving', 'on', true)"))
        session.execute(text(statement))


@pytest.mark.parametrize(
    ("live", "archive"),
    [("ledger_entries", "ledger_entries_archive"), ("transactions", "transactions_archive")],
)
def test_archive_tables_have_the_live_tables_columns(live: str, archive: str) -> None:
    query = text(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = :table ORDER BY column_name"
    )
    with db.transaction() as session:
        assert list(session.execute(query, {"table": live})) == list(
            session.execute(query, {"table": archive})
        )


def test_archive_rejects_a_naive_cutoff() -> None:
    with pytest.raises(ValueError, match="timezone"):
        archive_before(cutoff=dt.datetime(2020, 1, 1), chunk_size=10)
