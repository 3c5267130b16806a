"""A crash of a durable PostgreSQL under load (invariants 3, 4 and 6 of docs/architecture.md).

The session's server runs with fsync, synchronous commit and full-page writes
off, so a crash of it could lose commits it had acknowledged: the other
tests only stop it cleanly. Here it is restarted durable (every setting on,
as in production) for the one test, then SIGKILLed with all its processes
while clients pay over the app and a real worker applies: twice, once with
the worker's processes killed too, once with the worker left to reconnect.
PostgreSQL recovers from its WAL on the next start.

Afterwards every transaction that got a 202 exists, has ended (or is an open
hold), failed only for a reason the clients provoke, and left exactly its
entries; the balances are what the clients' record adds up to, nothing else
touched the wallets, each wallet's entries are in acceptance order, and the
ledger is consistent (``tests/oracles.py``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from tests.helpers import ClientThreads, deposit_body, statuses, wait_for, wait_terminal
from tests.oracles import Book, assert_explained
from tests.pipeline.test_bank import PROVOKED, random_payment, submit_until_accepted
from tests.servers import CeleryProcess, crash_postgres

pytestmark = pytest.mark.pipeline


@pytest.fixture
def durable_postgres(postgres_server: Any) -> Iterator[Any]:
    """Restart the session's PostgreSQL durable for the test; restart it as it was after."""
    db.reset_engine()
    postgres_server.stop()
    postgres_server.durable = True
    try:
        postgres_server.start()
        db.reset_engine()
        yield postgres_server
    finally:
        db.reset_engine()
        postgres_server.stop()
        postgres_server.durable = False
        postgres_server.start()


def settings_of_the_server() -> dict[str, str]:
    """Return the durability settings the running server reports."""
    names = ("fsync", "synchronous_commit", "full_page_writes")
    with db.transaction() as session:
        return {name: session.execute(text(f"SHOW {name}")).scalar_one() for name in names}


def test_crash_of_a_durable_postgres_under_load_loses_nothing_accepted(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, durable_postgres: Any,
    beat: Any,
) -> None:  # fmt: skip
    assert settings_of_the_server() == dict.fromkeys(
        ("fsync", "synchronous_commit", "full_page_writes"), "on"
    )
    book = Book(wallet_factory() for _ in range(8))
    client = app.test_client()
    for wallet in book.wallets:
        submit_until_accepted(client, service_headers, deposit_body(wallet), book)
    workers = [CeleryProcess("worker", "crash-0").start()]
    stop = threading.Event()

    def customer(seed: int) -> None:
        rng, local = random.Random(seed), app.test_client()
        while not stop.is_set():
            body = random_payment(rng, book.wallets)
            hold = submit_until_accepted(local, service_headers, body, book)
            if body["type"] == "hold" and rng.random() < 0.7:  # the rest expire
                verb = rng.choice(["capture", "void"])
                capture = {"amount": "0.01"} if verb == "capture" else None
                submit_until_accepted(
                    local, service_headers, capture, book, f"/v1/transactions/{hold}/{verb}"
                )

    def progressed(accepted: int, applied: int) -> bool:
        """Tell whether clients had ``accepted`` more accepted and the worker ``applied`` more applied."""
        ids = book.ids
        done = sum(s["status"] != "pending" for s in statuses(ids).values())
        return len(ids) >= accepted and done >= applied

    customers = ClientThreads()
    for seed in range(4):
        customers.start(customer, seed)
    crashes = []
    try:
        for kill_worker in (True, False):
            ids = book.ids
            applied = sum(s["status"] != "pending" for s in statuses(ids).values())
            wait_for(
                lambda ids=ids, applied=applied: progressed(len(ids) + 150, applied + 100),
                timeout_seconds=120,
                what="150 more accepted and 100 more applied before the crash",
                log=workers[-1].log,
            )
            if kill_worker:
                workers[-1].kill()
            crashes.append(crash_postgres(durable_postgres))
            durable_postgres.start()
            db.reset_engine()
            if kill_worker:
                workers.append(CeleryProcess("worker", f"crash-{len(workers)}").start())
        accepted = len(book.ids)
        wait_for(
            lambda: progressed(accepted + 100, 0),
            timeout_seconds=120,
            what="100 more accepted after the last crash",
            log=workers[-1].log,
        )
    finally:
        stop.set()
        if not durable_postgres.is_running():
            durable_postgres.start()
    try:
        customers.join(timeout_seconds=120)
        server_log = (durable_postgres.data_dir / "server.log").read_text(errors="replace")
        recoveries = server_log.count("automatic recovery in progress")
        assert recoveries >= len(crashes) == 2, f"no crash recovery:\n{server_log[-3000:]}"
        db.reset_engine()
        wait_terminal(book.ids, timeout_seconds=180, context=workers[-1].log())
        assert_explained(book, allowed_failures=PROVOKED, context=workers[-1].log())
    finally:
        for process in workers:
            process.stop()
