"""Faults (design.md invariants 3 and 4): killed workers, lost messages, a database outage.

Every test here starts and stops its own workers (no other worker may consume
the queue while a test arranges its fault). Each ends with every transaction
terminal, none applied twice, and the ledger consistent. Waits are bounded far
above the expected time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    statuses,
    submit,
    transfer_body,
    wait_terminal,
)
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline


@pytest.fixture
def fresh_worker() -> Iterator[CeleryProcess]:
    """A worker of this test's own, stopped (or killed) by the test or at its end."""
    started: list[CeleryProcess] = []

    class Factory:
        def start(self, **env: str) -> CeleryProcess:
            process = CeleryProcess("worker", f"w{len(started)}", concurrency=2, env=env).start()
            started.append(process)
            return process

    yield Factory()  # type: ignore[misc]
    for process in started:
        process.stop()


def assert_applied_once(transaction_ids: list[str]) -> None:
    """Every transaction left exactly the entries of one apply, a failed one none.

    Ledger entries: two per leg of a completed deposit, withdrawal, transfer,
    capture or group. Hold entries: one for an applied hold (whatever ended it
    since), one for a completed capture, void or expiry.
    """
    with db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT t.id, t.type, t.status,
                    (SELECT count(*) FROM ledger_entries e WHERE e.transaction_id = t.id) AS n,
                    (SELECT count(*) FROM hold_entries h WHERE h.transaction_id = t.id) AS held,
                    CASE WHEN t.status <> 'completed' THEN 0
                         WHEN t.type = 'group' THEN 2 * jsonb_array_length(t.legs)
                         WHEN t.type IN ('deposit', 'withdrawal', 'transfer', 'capture') THEN 2
                         ELSE 0 END AS n_expected,
                    CASE WHEN t.type = 'hold' AND t.status <> 'failed' AND t.status <> 'pending'
                              THEN 1
                         WHEN t.type IN ('capture', 'void', 'expiry') AND t.status = 'completed'
                              THEN 1
                         ELSE 0 END AS held_expected
                FROM transactions t WHERE t.id = ANY(:ids)
                """
            ),
            {"ids": [uuid.UUID(t) for t in transaction_ids]},
        ).all()
    wrong = [r for r in rows if (r.n, r.held) != (r.n_expected, r.held_expected)]
    assert not wrong, f"transactions applied other than once: {wrong[:5]}"


def submit_stream(
    client: Any, headers: dict[str, str], wallets: list[Any], count: int
) -> list[str]:
    ids = [submit(client, headers, deposit_body(w)).get_json()["id"] for w in wallets]
    for i in range(count):
        source, destination = wallets[i % len(wallets)], wallets[(i * 7 + 1) % len(wallets)]
        if source == destination:
            destination = wallets[(i + 1) % len(wallets)]
        ids.append(
            submit(
                client, headers, transfer_body(source, destination, f"{1 + i % 9}.00")
            ).get_json()["id"]
        )
    return ids


def test_sigkill_of_the_whole_worker_mid_stream_loses_and_duplicates_nothing(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any, beat: Any
) -> None:
    wallets = [wallet_factory() for _ in range(6)]
    ids = submit_stream(client, service_headers, wallets, 400)  # queued before any worker
    # One transaction per batch: draining takes seconds, so the kill lands mid-stream.
    first = fresh_worker.start(TALLY_BATCH_SIZE="1")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill once it is visibly mid-stream
        done = sum(1 for s in statuses(ids).values() if s["status"] != "pending")
        if done >= 20:
            break
        time.sleep(0.02)
    first.kill()
    assert any(s["status"] == "pending" for s in statuses(ids).values()), (
        "stream ended before the kill"
    )
    second = fresh_worker.start()
    wait_terminal(ids, timeout_seconds=120, context=second.log())
    assert_applied_once(ids)
    assert_ledger_consistent()


def test_sigkill_of_a_pool_process_mid_apply_is_redelivered(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any, beat: Any
) -> None:
    wallets = [wallet_factory() for _ in range(4)]
    process = fresh_worker.start()
    ids = submit_stream(client, service_headers, wallets, 200)
    for _ in range(3):
        time.sleep(0.15)
        for pid in process.pool_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_terminal(ids, timeout_seconds=120, context=process.log())
    assert_applied_once(ids)
    assert_ledger_consistent()


def test_messages_deleted_from_redis_are_recovered_by_the_sweep(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any,
    redis_client: Any, beat: Any,
) -> None:  # fmt: skip
    wallets = [wallet_factory() for _ in range(3)]
    ids = submit_stream(client, service_headers, wallets, 30)  # no worker yet: all queued
    assert redis_client.llen("tally") > 0
    redis_client.delete("tally")  # the messages are lost
    process = fresh_worker.start()
    wait_terminal(ids, timeout_seconds=60, context=process.log())
    assert_applied_once(ids)
    assert_ledger_consistent()


def test_database_down_during_apply_is_retried_then_completed(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any,
    postgres_server: Any,
) -> None:  # fmt: skip
    wallets = [wallet_factory() for _ in range(3)]
    ids = submit_stream(client, service_headers, wallets, 30)  # queued, not yet applied
    db.reset_engine()
    postgres_server.stop()
    try:
        process = fresh_worker.start()
        deadline = time.monotonic() + 30
        while b"drain_retry" not in process.log_path.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        # The whole log, not its tail: later lines (the sweep's, long errors) can push
        # the retry out of the last few thousand characters.
        met = b"drain_retry" in process.log_path.read_bytes()
        assert met, f"the worker never met the outage\n{process.log()}"
    finally:
        postgres_server.start()
    wait_terminal(ids, timeout_seconds=90, context=process.log())
    assert_applied_once(ids)
    assert_ledger_consistent()


def test_postgres_stopped_mid_stream_loses_and_duplicates_nothing(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    fresh_worker: Any,
    postgres_server: Any,
) -> None:
    wallets = [wallet_factory() for _ in range(4)]
    ids = submit_stream(client, service_headers, wallets, 300)  # queued, not yet applied
    process = fresh_worker.start()
    deadline = time.monotonic() + 30
    while sum(1 for s in statuses(ids).values() if s["status"] != "pending") < 20:
        assert time.monotonic() < deadline, process.log()
        time.sleep(0.02)
    db.reset_engine()
    # Fast shutdown terminates every backend mid-transaction, even mid-COMMIT. (Not
    # "immediate": the test server runs with synchronous_commit=off, so a crash there
    # would lose commits the server had acknowledged: a test artefact, not a fault.)
    postgres_server.stop(mode="fast")
    time.sleep(1)
    postgres_server.start()
    wait_terminal(ids, timeout_seconds=120, context=process.log())
    assert_applied_once(ids)
    assert_ledger_consistent()
