"""Reconciliation finds every balance that disagrees with the ledger, and records its runs."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.models import ReconciliationRun
from shared.services.archive import archive_before
from shared.services.reconciliation import (
    get_run,
    list_runs,
    run_reconciliation,
    start_reconciliation,
)
from tests.integration.ledger_history import Step, utc_midnight, write_history

WalletFactory = Callable[..., uuid.UUID]


def reconcile() -> ReconciliationRun:
    """Start a run and run it now, as the CLI does."""
    with db.transaction() as session:
        run_id = start_reconciliation(session)
    return run_reconciliation(run_id)


def _mine(run: ReconciliationRun, *wallet_ids: uuid.UUID) -> dict[str, tuple[int, int]]:
    ids = {str(w) for w in wallet_ids}
    return {
        m["wallet_id"]: (m["stored_balance_minor"], m["ledger_balance_minor"])
        for m in run.mismatches
        if m["wallet_id"] in ids
    }


@pytest.fixture
def history(wallet_factory: WalletFactory) -> tuple[uuid.UUID, uuid.UUID]:
    """Two wallets with archived entries, a snapshot, and entries of today after it."""
    a, b = wallet_factory(), wallet_factory()
    now = dt.datetime.now(dt.UTC)
    write_history(
        [
            Step("deposit", 10_000, utc_midnight(3), destination=a),
            Step("transfer", 3_000, utc_midnight(2), source=a, destination=b),
            Step("transfer", 500, now - dt.timedelta(seconds=2), source=b, destination=a),
            Step("withdrawal", 100, now - dt.timedelta(seconds=1), source=b),
        ]
    )
    archive_before(cutoff=utc_midnight(2) + dt.timedelta(hours=1), chunk_size=2)
    return a, b


@pytest.fixture
def trigger_disabled() -> Iterator[None]:
    """Let the test rewrite ledger entries, as an intruder with table-owner rights could."""
    with db.transaction() as session:
        session.execute(
            text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
        )
    try:
        yield
    finally:
        with db.transaction() as session:
            session.execute(
                text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
            )


def test_reconciliation_of_a_consistent_ledger_reports_none_of_its_wallets(
    history: tuple[uuid.UUID, uuid.UUID],
) -> None:
    run = reconcile()
    assert run.status == "ok"  # the suite keeps the whole ledger consistent between tests
    assert _mine(run, *history) == {}
    assert run.currency_totals["SGD"] == 0
    assert run.wallets_checked >= 2 and run.finished_at is not None


def test_reconciliation_finds_a_balance_changed_and_an_entry_forged(
    history: tuple[uuid.UUID, uuid.UUID], trigger_disabled: None
) -> None:
    a, b = history  # a: 7_500 stored; b: 2_400 stored
    forged = {"a": a, "by": 7}
    with db.transaction() as session:
        session.execute(
            text("UPDATE wallets SET balance_minor = balance_minor + 5 WHERE id = :id"), {"id": b}
        )
        # Rewrite a's newest entry (after its snapshot, still live): a credit of 500 becomes 507.
        session.execute(
            text(
                "UPDATE ledger_entries SET amount_minor = amount_minor + :by WHERE id = "
                "(SELECT id FROM ledger_entries WHERE wallet_id = :a ORDER BY sequence DESC LIMIT 1)"
            ),
            forged,
        )
    try:
        run = reconcile()
        assert run.status == "mismatch"
        assert _mine(run, a, b) == {str(a): (7_500, 7_507), str(b): (2_405, 2_400)}
        with db.transaction() as session:
            assert get_run(session, run.id).mismatches == run.mismatches
    finally:
        with db.transaction() as session:
            session.execute(
                text("UPDATE wallets SET balance_minor = balance_minor - 5 WHERE id = :id"),
                {"id": b},
            )
            session.execute(
                text(
                    "UPDATE ledger_entries SET amount_minor = amount_minor - :by WHERE id = "
                    "(SELECT id FROM ledger_entries WHERE wallet_id = :a "
                    "ORDER BY sequence DESC LIMIT 1)"
                ),
                forged,
            )
    healed = reconcile()
    assert healed.status == "ok" and _mine(healed, a, b) == {}
    assert healed.currency_totals["SGD"] == 0


def test_run_reconciliation_twice_does_the_work_once(history: Any) -> None:
    run = reconcile()
    again = run_reconciliation(run.id)
    assert (again.status, again.finished_at, again.mismatches) == (
        run.status,
        run.finished_at,
        run.mismatches,
    )


def test_run_reconciliation_of_an_unknown_run_is_not_found() -> None:
    from shared.ledger.errors import NotFound

    with pytest.raises(NotFound):
        run_reconciliation(uuid.uuid4())


def test_list_runs_pages_newest_first() -> None:
    ids = [reconcile().id for _ in range(3)]
    with db.transaction() as session:
        first, cursor = list_runs(session, limit=2, cursor=None)
        second, _ = list_runs(session, limit=2, cursor=cursor)
    listed = [r.id for r in [*first, *second]]
    assert listed[:3] == ids[::-1]


def test_reconciliations_api(client: Any, ops_headers: dict[str, str], redis_client: Any) -> None:
    response = client.post("/v1/reconciliations", headers=ops_headers)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "running"
    queued = [m for m in redis_client.lrange("tally", 0, -1) if body["id"].encode() in m]
    assert len(queued) == 1 and b"tally.reconcile" in queued[0]  # published to the real broker
    run_reconciliation(uuid.UUID(body["id"]))  # what the worker does with the message

    run = client.get(f"/v1/reconciliations/{body['id']}", headers=ops_headers).get_json()
    assert run["id"] == body["id"] and run["status"] == "ok"
    assert run["currency_totals"]["SGD"] == "0.00" and run["currency_totals"]["JPY"] == "0"
    assert set(run) >= {"started_at", "finished_at", "wallets_checked", "mismatches"}
    page = client.get("/v1/reconciliations?limit=1", headers=ops_headers).get_json()
    assert page["data"][0]["id"] == body["id"] and page["next_cursor"]


def test_reconciliations_api_answers_404_and_403(
    client: Any, ops_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    missing = client.get(f"/v1/reconciliations/{uuid.uuid4()}", headers=ops_headers)
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "reconciliation_not_found"
    assert client.get("/v1/reconciliations/nope", headers=ops_headers).status_code == 404
    assert client.post("/v1/reconciliations", headers=service_headers).status_code == 403
    assert client.get("/v1/reconciliations", headers=service_headers).status_code == 403


def test_a_reconciliation_that_fails_ends_error(monkeypatch: Any) -> None:
    from shared.services import reconciliation

    def broken(session: Any, run: Any) -> None:
        session.execute(text("SELECT 1 / 0"))

    monkeypatch.setattr(reconciliation, "_reconcile_into", broken)
    with db.transaction() as session:
        run_id = start_reconciliation(session)
    with pytest.raises(Exception, match="division by zero"):
        run_reconciliation(run_id)
    with db.transaction() as session:
        run = get_run(session, run_id)
    assert run.status == "error" and "division by zero" in (run.error or "")
    assert run.finished_at is not None


def test_reconciliation_finds_a_held_amount_changed_behind_the_ledgers_back(
    client: Any, service_headers: dict[str, str], wallet_factory: WalletFactory
) -> None:
    from tests.helpers import deposit_body, drain_stream, submit

    a = wallet_factory()
    submit(client, service_headers, deposit_body(a, "50.00"))
    hold = {"type": "hold", "amount": "20.00", "currency": "SGD", "source_wallet_id": str(a)}
    submit(client, service_headers, hold)
    drain_stream()
    assert reconcile().status == "ok"
    with db.transaction() as session:
        session.execute(
            text("UPDATE wallets SET held_minor = held_minor + 700 WHERE id = :id"), {"id": a}
        )
    try:
        run = reconcile()
        assert run.status == "mismatch"
        (mismatch,) = [m for m in run.mismatches if m["wallet_id"] == str(a)]
        assert mismatch["stored_balance_minor"] == mismatch["ledger_balance_minor"] == 5_000
        assert (mismatch["stored_held_balance_minor"], mismatch["ledger_held_balance_minor"],
                mismatch["open_holds_minor"]) == (2_700, 2_000, 2_000)  # fmt: skip
    finally:
        with db.transaction() as session:
            session.execute(
                text("UPDATE wallets SET held_minor = held_minor - 700 WHERE id = :id"), {"id": a}
            )
    assert reconcile().status == "ok"
