"""Long-polls over real HTTP: hundreds of parked waiters hold no thread and no connection.

The API runs as ``tally serve web`` runs it (uvicorn, ``api.asgi``). With
no worker running, waiters park on pending transactions; the API still
answers at once, its worker process has a handful of threads and at most its
pool of database connections. When a worker starts, every waiter is woken by
the settled announcement, long before its own deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from sqlalchemy import make_url

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


async def _park_and_probe(
    url: str, headers: dict[str, str], ids: list[str], worker_pid: int
) -> dict[str, Any]:
    """Park one long-poll per id, probe the API while they wait, then start a worker."""
    timeout = aiohttp.ClientTimeout(total=WAIT_SECONDS + 30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def wait_one(transaction_id: str) -> tuple[float, dict[str, Any]]:
            async with session.get(
                f"{url}/v1/transactions/{transaction_id}?wait={WAIT_SECONDS}", headers=headers
            ) as response:
                assert response.status == 200
                return time.monotonic(), await response.json()

        waiting = [asyncio.create_task(wait_one(t)) for t in ids]
        await _until_connected(worker_pid, int(url.rsplit(":", 1)[1]), len(ids))
        probe_started = time.monotonic()
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        healthz_seconds = time.monotonic() - probe_started
        worker_process = psutil.Process(worker_pid)
        threads = worker_process.num_threads()
        database_port = make_url(os.environ["DATABASE_URL"]).port
        connections = sum(
            1
            for c in worker_process.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == database_port
        )
        assert not any(task.done() for task in waiting), "a waiter answered before any apply"
        worker = CeleryProcess("worker", "longpoll").start()
        try:
            started = time.monotonic()
            answers = await asyncio.gather(*waiting)
        finally:
            worker.stop()
    return {
        "healthz_seconds": healthz_seconds,
        "threads": threads,
        "connections": connections,
        "answered_after_seconds": [answered - started for answered, _ in answers],
        "statuses": {body["status"] for _, body in answers},
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
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        result = executor.submit(
            asyncio.run, _park_and_probe(url, service_headers, ids, worker_process.pid)
        ).result()
    assert result["statuses"] == {"completed"}
    # Parked waiters cost neither threads nor connections (a thread per request would need
    # 300 of each).
    assert result["threads"] < 20, result
    assert result["connections"] <= get_settings().db_pool_size, result
    assert result["healthz_seconds"] < WAIT_SECONDS / 2, result
    # Woken by the announcement, not by their deadline (which would be 30 s after parking).
    assert max(result["answered_after_seconds"]) < WAIT_SECONDS - 5, result
