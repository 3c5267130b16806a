"""Faults (docs/architecture.md, invariants 3 and 4): killed workers, lost messages, a database outage.

Every test here starts and stops its own workers (no other worker may consume
the queue while a test arranges its fault). Each ends with every transaction
terminal, none applied twice, none failed (no wallet spends more than it has), every
balance what the client's own record of its requests adds up to, each wallet's
entries in acceptance order, and the ledger consistent (``tests/oracles.py``).
Waits are bounded far above the expected time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from tests.helpers import deposit_body, statuses, transfer_body, wait_for, wait_terminal
from tests.oracles import Book, assert_explained
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

#: The failures these streams provoke: none, as every wallet is funded with more than it
#: ever sends, so a transfer fails only if applied out of acceptance order or given up.
PROVOKED: set[str] = set()


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


def submit_stream(client: Any, headers: dict[str, str], book: Book, count: int) -> list[str]:
    """Fund each of the book's wallets with 10000.00, then submit ``count`` transfers among them.

    One request after another, each recorded in ``book``; returns the ids.
    """
    wallets = book.wallets
    bodies = [deposit_body(w, "10000.00") for w in wallets]
    for i in range(count):
        source, destination = wallets[i % len(wallets)], wallets[(i * 7 + 1) % len(wallets)]
        if source == destination:
            destination = wallets[(i + 1) % len(wallets)]
        bodies.append(transfer_body(source, destination, f"{1 + i % 9}.00"))
    for body in bodies:
        response = book.submit(client, headers, body)
        assert response.status_code == 202, response.get_json()
    return book.ids


def test_sigkill_of_the_whole_worker_mid_stream_loses_and_duplicates_nothing(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any, beat: Any
) -> None:
    book = Book(wallet_factory() for _ in range(6))
    ids = submit_stream(client, service_headers, book, 400)  # queued before any worker
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
    assert_explained(book, allowed_failures=PROVOKED, context=second.log())


def test_sigkill_of_a_pool_process_mid_apply_is_redelivered(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any, beat: Any
) -> None:
    book = Book(wallet_factory() for _ in range(4))
    process = fresh_worker.start()
    ids = submit_stream(client, service_headers, book, 200)
    for _ in range(3):
        time.sleep(0.15)
        for pid in process.pool_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    wait_terminal(ids, timeout_seconds=120, context=process.log())
    assert_explained(book, allowed_failures=PROVOKED, context=process.log())


def test_messages_deleted_from_redis_are_recovered_by_the_sweep(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any,
    redis_client: Any, beat: Any,
) -> None:  # fmt: skip
    book = Book(wallet_factory() for _ in range(3))
    ids = submit_stream(client, service_headers, book, 30)  # no worker yet: all queued
    assert redis_client.llen("tally") > 0
    redis_client.delete("tally")  # the messages are lost
    process = fresh_worker.start()
    wait_terminal(ids, timeout_seconds=60, context=process.log())
    assert_explained(book, allowed_failures=PROVOKED, context=process.log())


def test_database_down_during_apply_is_retried_then_completed(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any,
    postgres_server: Any,
) -> None:  # fmt: skip
    book = Book(wallet_factory() for _ in range(3))
    ids = submit_stream(client, service_headers, book, 30)  # queued, not yet applied
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
    assert_explained(book, allowed_failures=PROVOKED, context=process.log())


def test_postgres_stopped_mid_stream_loses_and_duplicates_nothing(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    fresh_worker: Any,
    postgres_server: Any,
) -> None:
    book = Book(wallet_factory() for _ in range(4))
    ids = submit_stream(client, service_headers, book, 300)  # queued, not yet applied
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
    assert_explained(book, allowed_failures=PROVOKED, context=process.log())


def test_worker_killed_with_its_batch_claimed_leaves_it_applied_not_failed(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fresh_worker: Any, beat: Any
) -> None:
    """The kill lands between claim and apply every time: the apply waits on a wallet this test locks.

    Its claim is recorded (``apply_claims``), so the next worker counts the
    dead attempt and meets every transaction of the batch as a suspect
    (applied alone); a fault must still not fail one.
    """
    book = Book(wallet_factory() for _ in range(3))
    ids = submit_stream(client, service_headers, book, 30)  # queued: one batch
    with db.get_engine().connect() as holder:
        holder.execute(
            text("SELECT 1 FROM wallets WHERE id = :id FOR NO KEY UPDATE"),
            {"id": book.wallets[0]},
        )
        # Lock waits far longer than the test's: each timeout would count another attempt.
        first = fresh_worker.start(
            TALLY_LOCK_TIMEOUT_MS="600000", TALLY_STATEMENT_TIMEOUT_MS="900000"
        )
        wait_for(
            lambda: _claimed() == set(ids) and _lock_waits(),
            timeout_seconds=60,
            what="the batch claimed and its apply waiting on the locked wallet",
            log=first.log,
        )
        first.kill()
        holder.rollback()
    second = fresh_worker.start()
    wait_terminal(ids, timeout_seconds=120, context=second.log())
    assert_explained(book, allowed_failures=PROVOKED, context=second.log())
    # Each counts the attempt that died and the one that applied it (more if a
    # slow machine's statement timed out meanwhile: that too is an attempt).
    assert min(s["attempts"] for s in statuses(ids).values()) >= 2


def _claimed() -> set[str]:
    """Return the ids of the apply stream's claim in flight (none when no claim is recorded)."""
    with db.transaction() as session:
        claimed = session.execute(text("SELECT transaction_ids FROM apply_claims")).scalar()
    return {str(i) for i in claimed or ()}


def _lock_waits() -> int:
    """Return how many sessions of the test database wait on a lock."""
    with db.transaction() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )
