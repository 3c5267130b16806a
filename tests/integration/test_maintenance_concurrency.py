"""Every maintenance job may run twice, or as two copies at once, and change nothing more."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import text

from shared import db
from shared.services.archive import archive_before
from shared.services.reconciliation import run_reconciliation, start_reconciliation
from shared.services.snapshots import take_snapshots
from tests.integration.ledger_history import Step, utc_midnight, write_history
from tests.integration.test_archive import observe, probes_for

WalletFactory = Callable[..., uuid.UUID]
T = TypeVar("T")


def at_once(job: Callable[[], T], copies: int = 2) -> list[T]:
    """Run ``copies`` of ``job`` in threads released together; return their results."""
    barrier = threading.Barrier(copies)
    results: list[Any] = [None] * copies
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = job()
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a job copy did not finish in 60 s"
    if errors:
        raise errors[0]
    return results


def _history(wallet_factory: WalletFactory) -> tuple[list[uuid.UUID], list[Step], list[uuid.UUID]]:
    wallets = [wallet_factory() for _ in range(3)]
    steps = []
    for day in range(5, 0, -1):
        for hour in range(0, 24, 5):
            at = utc_midnight(day) + dt.timedelta(hours=hour)
            a, b = wallets[hour % 3], wallets[(hour + day) % 3 or 1]
            steps.append(Step("deposit", 1_000 + hour, at, destination=a))
            if a != b:
                steps.append(
                    Step("transfer", 300, at + dt.timedelta(minutes=1), source=a, destination=b)
                )
    return wallets, steps, write_history(steps)


def _table(query: str, wallets: list[uuid.UUID]) -> list[Any]:
    with db.transaction() as session:
        return sorted(tuple(r) for r in session.execute(text(query), {"ids": wallets}))


def _snapshot_rows(wallets: list[uuid.UUID]) -> list[Any]:
    return _table(
        "SELECT wallet_id, day, balance_minor, last_sequence FROM balance_snapshots "
        "WHERE wallet_id = ANY(:ids)",
        wallets,
    )


def _snapshot_job() -> int:
    with db.transaction() as session:
        return take_snapshots(session).snapshots_created


def test_snapshot_job_twice_and_at_once(wallet_factory: WalletFactory) -> None:
    wallets, _, _ = _history(wallet_factory)
    created = at_once(_snapshot_job)
    rows = _snapshot_rows(wallets)
    assert len(rows) == 3 * 5 and sum(created) >= len(rows)
    assert 0 in created  # the copy that waited found everything done
    assert _snapshot_job() == 0
    assert _snapshot_rows(wallets) == rows


def test_archive_job_twice_and_at_once(wallet_factory: WalletFactory) -> None:
    wallets, steps, transaction_ids = _history(wallet_factory)
    probes = probes_for(steps)
    before = observe(wallets, transaction_ids, probes)
    entries = _table("SELECT id, sequence FROM ledger_entries WHERE wallet_id = ANY(:ids)", wallets)
    cutoff = utc_midnight(2)

    summaries = at_once(lambda: archive_before(cutoff=cutoff, chunk_size=5))
    moved = _table(
        "SELECT id, sequence FROM ledger_entries_archive WHERE wallet_id = ANY(:ids)", wallets
    )
    live = _table("SELECT id, sequence FROM ledger_entries WHERE wallet_id = ANY(:ids)", wallets)
    assert sorted(moved + live) == entries and moved and live  # each entry in exactly one table
    assert sum(s.entries_archived for s in summaries) >= len(moved)
    assert observe(wallets, transaction_ids, probes) == before

    again = archive_before(cutoff=cutoff, chunk_size=5)
    assert (again.entries_archived, again.transactions_archived) == (0, 0)
    assert observe(wallets, transaction_ids, probes) == before


def test_reconcile_job_twice_and_at_once(wallet_factory: WalletFactory) -> None:
    wallets, _, _ = _history(wallet_factory)
    with db.transaction() as session:
        run_id = start_reconciliation(session)
    at_once(lambda: run_reconciliation(run_id))
    done = run_reconciliation(run_id)
    assert done.status == "ok" and done.finished_at is not None
    assert not {str(w) for w in wallets} & {m["wallet_id"] for m in done.mismatches}
    assert run_reconciliation(run_id).finished_at == done.finished_at


def test_celery_tasks_run_the_jobs(wallet_factory: WalletFactory) -> None:
    from worker import maintenance_tasks

    wallets, _, _ = _history(wallet_factory)
    assert maintenance_tasks.take_snapshots() >= 15
    assert maintenance_tasks.take_snapshots() == 0
    assert maintenance_tasks.archive_entries() == 0  # the default cutoff, 90 days ago, spares it
    statuses = at_once(maintenance_tasks.reconcile)
    assert set(statuses) == {"ok"}
    assert len(_snapshot_rows(wallets)) == 15
