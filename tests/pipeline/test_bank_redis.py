"""The bank test with Redis loss, on the stack as ``tally up`` runs it.

``tally up`` runs the API, worker and beat under supervisord against the test
session's PostgreSQL and Redis (with ``DATABASE_URL`` / ``REDIS_URL`` set it
starts no servers of its own). Clients pay over real HTTP while Redis is
emptied (FLUSHALL: queued messages, beat's lock and schedule, lane signals all
gone) and, separately, stopped and started again; the worker's main process
is SIGKILLed, PostgreSQL restarts and queued messages are deleted. A client
retries a 503, a 409 and a failed connection with the same Idempotency-Key.

Afterwards: every accepted transaction is terminal within a bound, none was
applied twice, none failed but for ``insufficient_funds``, every balance is
what the clients' record of their requests adds up to, no transaction on the
wallets is one no client submitted, each wallet's entries are in acceptance
order, money is conserved, sequences have no gaps (``tests/oracles.py``), and
every request got an HTTP answer that a careful client expects (503 allowed
while PostgreSQL is down; never a 500, a refused or a dropped connection,
since nothing here stops the API).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from cli.devservers import free_port
from shared import db
from tests.helpers import (
    ClientThreads,
    database_sessions,
    deposit_body,
    transfer_body,
    wait_terminal,
)
from tests.oracles import Book, assert_explained
from tests.servers import TallyUp

pytestmark = pytest.mark.pipeline

#: Answers a careful client retries with the same Idempotency-Key.
RETRIED = {409, 503}

#: Every answer a careful client expects here: accepted, or retried.
EXPECTED_ANSWERS = {200, 201, 202} | RETRIED


class Customers:
    """Threads that pay over HTTP until stopped; they record every answer and every failure.

    Each accepted request goes into ``book``.
    """

    def __init__(self, url: str, headers: dict[str, str], book: Book) -> None:
        self.url, self.headers, self.book = url, headers, book
        self.wallets = book.wallets
        self.answers: collections.Counter[int] = collections.Counter()
        self.unanswered: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = ClientThreads()

    def pay(self, session: requests.Session, body: dict[str, Any]) -> str:
        """Submit ``body`` until accepted, retrying with one key; return the transaction id.

        Raises:
            AssertionError: an answer other than 2xx, 409 or 503, or no acceptance in 90 s.
        """
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        sent_at = time.monotonic()
        deadline = sent_at + 90
        while True:
            assert time.monotonic() < deadline, "not accepted within 90 s"
            try:
                response = session.post(
                    f"{self.url}/v1/transactions", json=body, headers=headers, timeout=30
                )
            except requests.RequestException as exc:
                with self._lock:
                    self.unanswered.append(repr(exc))
                time.sleep(0.2)
                continue
            with self._lock:
                self.answers[response.status_code] += 1
            if response.status_code in (200, 201, 202):
                return self.book.record(response.json()["id"], body, sent_at=sent_at)
            assert response.status_code in RETRIED, (response.status_code, response.text)
            time.sleep(0.2)

    def _run(self, seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        while not self.stop.is_set():
            source, destination = rng.sample(self.wallets, 2)
            amount = f"{rng.randint(1, 4000) / 100:.2f}"
            body = (
                transfer_body(source, destination, amount)
                if rng.random() < 0.85
                else {"type": "withdrawal", "amount": amount, "currency": "SGD",
                      "source_wallet_id": str(source)}
            )  # fmt: skip
            self.pay(session, body)

    def start(self, count: int) -> None:
        """Start ``count`` paying threads."""
        for seed in range(count):
            self._threads.start(self._run, seed)

    def join(self) -> None:
        """Stop paying and wait for each thread's last payment to be accepted.

        Raises:
            AssertionError: a thread failed (an unexpected answer, say) or is still paying.
        """
        self.stop.set()
        self._threads.join(timeout_seconds=120)


def test_bank_under_redis_loss_with_the_supervised_stack(
    tmp_path: Path, service_headers: dict[str, str], wallet_factory: Any,
    postgres_server: Any, redis_server: Any, redis_client: Any,
) -> None:  # fmt: skip
    rng = random.Random(20261124)
    (tmp_path / "Procfile").write_text(Path("Procfile").read_text())
    stack = TallyUp(tmp_path, free_port(), env={
        "DATABASE_URL": os.environ["DATABASE_URL"], "REDIS_URL": os.environ["REDIS_URL"],
        "TALLY_WORKER_CONCURRENCY": "2", "TALLY_WEB_WORKERS": "2", "TALLY_LOG_LEVEL": "WARNING",
    }).start()  # fmt: skip
    try:
        book = Book(wallet_factory() for _ in range(8))
        customers = Customers(stack.url, service_headers, book)
        session = requests.Session()
        for wallet in book.wallets:
            customers.pay(session, deposit_body(wallet))
        customers.start(4)
        faults = ["flushall", "kill_worker", "restart_redis", "restart_postgres",
                  "drop_messages", "flushall", "restart_redis", "kill_worker"]  # fmt: skip
        try:
            for fault in faults:
                time.sleep(rng.uniform(1.5, 3.0))
                if fault == "flushall":
                    redis_client.flushall()
                elif fault == "drop_messages":
                    redis_client.delete("tally")
                elif fault == "kill_worker":
                    os.kill(stack.wait_running("worker"), signal.SIGKILL)
                elif fault == "restart_redis":
                    redis_server.stop()
                    time.sleep(rng.uniform(1.0, 3.0))
                    redis_server.start()
                else:
                    postgres_server.stop(mode="fast")
                    time.sleep(rng.uniform(0.5, 1.5))
                    postgres_server.start()
        finally:
            if not redis_server.answers_ping():
                redis_server.start()
            if not postgres_server.is_running():
                postgres_server.start()
            customers.join()
        faults_over = time.monotonic()
        ids = book.ids
        assert len(ids) > 50, customers.answers
        db.reset_engine()  # this process's pooled connections died with PostgreSQL
        try:
            wait_terminal(ids, timeout_seconds=120)
        except AssertionError as error:
            # What held the work: every database session, where each worker process
            # waits, and the stack's last words.
            raise AssertionError(
                f"{error}\n{database_sessions()}\n{stack.python_stacks('worker')}\n"
                f"{stack.output()[-6000:]}"
            ) from None
        terminal_seconds = time.monotonic() - faults_over
        assert_explained(book, allowed_failures={"insufficient_funds"})
        assert set(customers.answers) <= EXPECTED_ANSWERS, customers.answers
        assert customers.unanswered == [], (
            f"{len(customers.unanswered)} requests got no HTTP answer, e.g. "
            f"{customers.unanswered[:3]}"
        )
        print(f"\nbank with Redis loss: {len(ids)} accepted, answers {dict(customers.answers)}, "
              f"all terminal {terminal_seconds:.1f}s after the last fault")  # fmt: skip
    finally:
        stack.stop()
