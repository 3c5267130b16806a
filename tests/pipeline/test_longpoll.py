"""Long-polls over real HTTP: hundreds of parked waiters hold no thread and no connection.

The API runs as ``tally serve web`` runs it (uvicorn, ``api.asgi``). With
no worker running, waiters park on pending transactions; the API still
answers at once, its worker process has a handful of threads and at most its
pool of database connections. When a worker starts, every waiter is woken by
the settled announcement, not by its own deadline: the API counts each
wake-up by its reason (``tally_long_poll_wakeups_total``), so the test asks
the API what woke them instead of timing the answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url

from broker import QUEUE
from shared.config import get_settings
from tests.helpers import deposit_body, submit
from tests.servers import LOG_DIR, CeleryProcess, serve_web

pytestmark = pytest.mark.pipeline

TALLY = str(Path(sys.executable).parent / "tally")
WAITERS = 300
WAIT_SECONDS = 30


@pytest.fixture
def web() -> Iterator[tuple[str, psutil.Process]]:
    """Run ``tally serve web`` (one worker process) on a free port; yield its URL and worker."""
    with serve_web(LOG_DIR) as (url, process):
        # One worker: uvicorn serves in the process itself; more: in its children.
        server = psutil.Process(process.pid)
        yield url, next(iter(server.children()), server)


def _consume_apply_queue(worker: CeleryProcess) -> None:
    """Tell ``worker`` (started on the webhook queue alone) to consume the apply queue too.

    Raises:
        AssertionError: the worker did not acknowledge the control command.
    """
    producer = Celery("longpoll-control", broker=get_settings().redis_url)
    replies = producer.control.add_consumer(
        QUEUE, destination=[f"{worker.name}@{socket.gethostname()}"], reply=True, timeout=30
    )
    assert replies, "the worker did not answer add_consumer"


async def _park_and_probe(
    url: str, headers: dict[str, str], ids: list[str], worker_pid: int, worker: CeleryProcess
) -> dict[str, Any]:
    """Park one long-poll per id, probe the API while they wait, then let the worker apply."""
    timeout = aiohttp.ClientTimeout(total=None)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def wait_one(transaction_id: str) -> dict[str, Any]:
            async with session.get(
                f"{url}/v1/transactions/{transaction_id}?wait={WAIT_SECONDS}", headers=headers
            ) as response:
                assert response.status == 200
                body: dict[str, Any] = await response.json()
                return body

        waiting = [asyncio.create_task(wait_one(t)) for t in ids]
        await _until_connected(worker_pid, int(url.rsplit(":", 1)[1]), len(ids))
        # The API answers while every waiter is parked.
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        worker_process = psutil.Process(worker_pid)
        threads = worker_process.num_threads()
        database_port = make_url(os.environ["DATABASE_URL"]).port
        connections = sum(
            1
            for c in worker_process.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == database_port
        )
        assert not any(task.done() for task in waiting), "a waiter answered before any apply"
        # The worker is up already (its start is not inside the waiters' 30 s); it begins
        # on the apply queue only now, so every waiter was parked before any apply.
        await asyncio.to_thread(_consume_apply_queue, worker)
        answers = await asyncio.gather(*waiting)
        async with session.get(f"{url}/metrics") as response:
            wakeups = _wakeups(await response.text())
    return {
        "threads": threads,
        "connections": connections,
        "wakeups": wakeups,
        "statuses": {body["status"] for body in answers},
    }


def _wakeups(exposition: str) -> dict[str, float]:
    """Return ``tally_long_poll_wakeups_total`` by reason from a Prometheus text exposition."""
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "tally_long_poll_wakeups"
        for sample in family.samples
        if sample.name == "tally_long_poll_wakeups_total"
    }


async def _until_connected(pid: int, port: int, count: int) -> None:
    """Wait until process ``pid`` holds ``count`` client connections on ``port`` (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        established = sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )
        if established >= count:
            await asyncio.sleep(0.5)  # the requests on them are read at once; let them park
            return
        assert time.monotonic() < deadline, f"only {established} of {count} waiters connected"
        await asyncio.sleep(0.1)


def test_parked_long_polls_hold_no_thread_and_wake_when_settled(
    web: tuple[str, psutil.Process],
    app: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    redis_client: Any,
) -> None:
    url, worker_process = web
    client = app.test_client()
    wallets = [wallet_factory() for _ in range(20)]
    ids = [
        submit(client, service_headers, deposit_body(wallets[i % 20], "1.00")).get_json()["id"]
        for i in range(WAITERS)
    ]
    # A loop of its own in a thread of its own: an earlier test's loop may still be
    # set on this thread (Playwright's sync API keeps one), and asyncio.run refuses that.
    worker = CeleryProcess("worker", "longpoll", queues="tally.webhooks").start()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            result = executor.submit(
                asyncio.run, _park_and_probe(url, service_headers, ids, worker_process.pid, worker)
            ).result()
    finally:
        worker.stop()
    assert result["statuses"] == {"completed"}
    # Parked waiters cost neither threads nor connections: a thread per request would need
    # 300 of each; the process has its pool's threads and a few of its own.
    assert result["threads"] < WAITERS // 10, result
    assert result["connections"] <= get_settings().db_pool_size, result
    # Every waiter was woken by the announcement, none by its deadline.
    assert result["wakeups"].get("announced") == WAITERS, result
    assert result["wakeups"].get("deadline", 0) == 0, result
