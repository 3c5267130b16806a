"""Safe retries against real faults: a killed API process and a restarted PostgreSQL.

Each submission is retried with the idempotency key of its first attempt, so
however many attempts reach the API there is one transaction (docs/client.md,
"Retries"). Both clients run the same tests.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import text
from tally_client import AsyncTally

from shared import db
from tests.client.conftest import FLAVORS, Recorder, run_client, secret_of
from tests.helpers import ClientThreads, wait_for
from tests.servers import LOG_DIR, serve_web

pytestmark = pytest.mark.pipeline


def _transactions_keyed(key: str) -> list[str]:
    """Return the ids of the transactions recorded under idempotency key ``key``."""
    with db.transaction() as session:
        rows = session.execute(
            text("SELECT id FROM transactions WHERE idempotency_key = :key"), {"key": key}
        ).all()
    return [str(row.id) for row in rows]


def _deposit_in_thread(
    threads: ClientThreads,
    result: dict[str, Any],
    flavor: str,
    url: str,
    api_key: str,
    wallet: Any,
    recorder: Recorder,
) -> None:
    """Deposit 3.00 into ``wallet`` in a client thread, with retries enough to outlast a
    restart; the transaction goes into ``result["tx"]``."""

    def deposit() -> None:
        operation = lambda c: c.transactions.deposit("3.00", "SGD", wallet)  # noqa: E731
        result["tx"] = run_client(
            flavor, url, api_key, operation, recorder=recorder, max_retries=60
        )

    threads.start(deposit)


def _keys_sent(recorder: Recorder) -> set[str]:
    return {request.headers["Idempotency-Key"] for request, _ in recorder.exchanges}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_an_answer_lost_with_a_killed_api_is_retried_into_one_transaction(
    flavor: str, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    threads, result = ClientThreads(), {}
    with serve_web(LOG_DIR) as (url, process):

        def kill_then_lose_the_answer(request: httpx.Request, response: httpx.Response) -> None:
            # The first submission was recorded (its 202 is here); the API dies before the
            # client reads it, as a SIGKILL between commit and answer would leave things.
            if len(recorder.exchanges) == 1:
                _kill(process)
                raise httpx.RemoteProtocolError("the API died mid-answer", request=request)

        recorder = Recorder(after=kill_then_lose_the_answer)
        _deposit_in_thread(
            threads, result, flavor, url, secret_of(service_headers), wallet, recorder
        )
        wait_for(lambda: process.poll() is not None, timeout_seconds=120, what="the API killed")
    port = urlparse(url).port
    with serve_web(LOG_DIR, port=port):  # the API restarted on the same address
        threads.join(timeout_seconds=300)

    first = recorder.exchanges[0][1]
    assert isinstance(first, httpx.Response) and first.status_code == 202, recorder.statuses()
    assert str(result["tx"].id) == first.json()["id"]
    last = recorder.exchanges[-1][1]
    assert isinstance(last, httpx.Response), recorder.statuses()
    assert (last.status_code, last.headers["Idempotent-Replayed"]) == (200, "true")
    (key,) = _keys_sent(recorder)  # every attempt carried the first attempt's key
    assert _transactions_keyed(key) == [str(result["tx"].id)]


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the API's process group and reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_submission_during_a_postgres_restart_is_retried_into_one_transaction(
    flavor: str,
    api_url: str,
    service_headers: dict[str, str],
    wallet_factory: Any,
    postgres_server: Any,
) -> None:
    wallet = wallet_factory()
    threads, result, recorder = ClientThreads(), {}, Recorder()
    postgres_server.stop()
    try:
        _deposit_in_thread(
            threads, result, flavor, api_url, secret_of(service_headers), wallet, recorder
        )
        # The API refuses while the database is down (nothing recorded), and the client retries.
        wait_for(
            lambda: 503 in recorder.statuses(),
            timeout_seconds=120,
            what="a 503 while PostgreSQL is down",
            log=lambda: str(recorder.statuses()),
        )
    finally:
        postgres_server.start()
        db.reset_engine()  # this process's pooled connections died with PostgreSQL
    threads.join(timeout_seconds=300)

    statuses = recorder.statuses()
    assert statuses[-1] == 202 and set(statuses[:-1]) == {503}, statuses
    (key,) = _keys_sent(recorder)
    assert _transactions_keyed(key) == [str(result["tx"].id)]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_429_is_retried_with_the_same_key_until_the_window_allows(
    flavor: str,
    monkeypatch: pytest.MonkeyPatch,
    service_headers: dict[str, str],
    wallet_factory: Any,
) -> None:
    wallet = wallet_factory()
    # Read by the API it starts. Two per 20 s: the third deposit is refused however slowly
    # the machine sends the three (a 1 s window could end between two of them).
    monkeypatch.setenv("TALLY_RATE_LIMIT_SERVICE", "2 per 20 seconds")

    def three_deposits(client: Any) -> Any:
        calls = [lambda: client.transactions.deposit("1.00", "SGD", wallet) for _ in range(3)]
        if isinstance(client, AsyncTally):

            async def run() -> list[Any]:
                return [await call() for call in calls]

            return run()
        return [call() for call in calls]

    recorder = Recorder()
    with serve_web(LOG_DIR) as (url, _process):
        deposits = run_client(
            flavor, url, secret_of(service_headers), three_deposits, recorder=recorder,
            max_retries=30,
        )  # fmt: skip

    statuses = recorder.statuses()
    assert 429 in statuses and statuses.count(202) == 3, statuses
    for (request, outcome), (retried, _) in itertools.pairwise(recorder.exchanges):
        if isinstance(outcome, httpx.Response) and outcome.status_code == 429:
            assert "Retry-After" in outcome.headers
            assert retried.headers["Idempotency-Key"] == request.headers["Idempotency-Key"]
    assert len(_keys_sent(recorder)) == 3
    for deposit in deposits:
        (key,) = {r.headers["Idempotency-Key"] for r, o in recorder.exchanges if isinstance(o, httpx.Response) and o.status_code == 202 and o.json()["id"] == str(deposit.id)}  # fmt: skip
        assert _transactions_keyed(key) == [str(deposit.id)]
