"""Flower and ``celery inspect`` see a running worker over the broker, from other processes.

The tests' workers, like ``tally serve worker``, run ``--without-gossip
--without-mingle``: those only stop workers from watching each other, while
remote control (the ``pidbox`` queue that ping, inspect and Flower use) stays on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cli.devservers import free_port
from tests.servers import TALLY

pytestmark = pytest.mark.pipeline


def test_celery_inspect_ping_from_another_process_sees_the_worker(worker: Any) -> None:
    node = f"worker@{socket.gethostname()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "ping",
         "--destination", node, "--timeout", "10"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{node}: OK" in done.stdout and "pong" in done.stdout, done.stdout
    print(f"\ninspect ping answered in {time.monotonic() - started:.1f}s")


@pytest.fixture
def flower() -> Iterator[str]:
    """Run ``tally serve flower`` on a free port; yield its URL."""
    port = free_port()
    env = {**os.environ, "TALLY_FLOWER_PORT": str(port), "TALLY_HOST": "127.0.0.1",
           # Flower 2 serves its JSON API without a login only when told to.
           "FLOWER_UNAUTHENTICATED_API": "true"}  # fmt: skip
    process = subprocess.Popen(
        [TALLY, "serve", "flower"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if requests.get(f"{url}/healthcheck", timeout=2).text == "OK":
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "flower did not answer in 60s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_flower_lists_the_running_worker(worker: Any, flower: str) -> None:
    node = f"worker@{socket.gethostname()}"
    deadline = time.monotonic() + 60
    while True:
        workers = requests.get(f"{flower}/api/workers?refresh=1", timeout=30).json()
        if node in workers:
            break
        assert time.monotonic() < deadline, f"flower never listed {node}: {list(workers)}"
        time.sleep(0.5)
    assert set(workers[node]) >= {"stats", "registered"}
    assert "tally.drain" in workers[node]["registered"]
