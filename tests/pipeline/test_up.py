"""``tally up``: the whole stack from one command, kept up, stopped cleanly, and its data found again.

Every process of the stack runs under supervisord; these tests SIGKILL each
one (the worker's main process, beat, the API server's main process, Redis,
PostgreSQL) and check that it comes back, leaves nothing behind, and that the
stack serves again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tally_client import Tally, TallyError

from cli.devservers import free_port
from shared.config import get_settings
from tests.servers import TALLY, TallyUp

pytestmark = pytest.mark.pipeline


def request(url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    if body is None:
        response = requests.get(url, headers=headers, timeout=30)
    else:
        response = requests.post(url, json=body, headers=headers, timeout=30)
    return response.status_code, response.json()


def until(what: str, attempt: Any, *, timeout_seconds: float) -> Any:
    """Call ``attempt()`` until it returns a truthy value (503s, refused connections and the
    client's errors are awaited like None); return that value.

    Raises:
        AssertionError: nothing truthy within ``timeout_seconds``; names ``what`` and the last error.
    """
    deadline = time.monotonic() + timeout_seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = attempt()
            if result:
                return result
        except (requests.RequestException, ValueError, TallyError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_seconds}s (last error: {last!r})")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Yield a fresh directory to run ``tally up`` in, outside pytest's temporary root.

    As root, the embedded PostgreSQL runs as ``embedded_postgres``, which must be
    able to reach its data directory every time supervisord restarts it; pytest
    resets its own root to mode 0700 whenever any pytest session starts.
    """
    path = Path(tempfile.mkdtemp(prefix="tally-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_tally_up_serves_stops_everything_and_restarts_on_its_data(workdir: Path) -> None:
    port = free_port()
    (workdir / "Procfile").write_text(Path("Procfile").read_text())
    stack = TallyUp(workdir, port).start()
    try:
        key = json.loads((stack.data_dir / "api-keys.json").read_text())["service"]
        assert key in stack.output()
        url = stack.url
        status, wallet = request(
            f"{url}/v1/wallets", key, {"owner_ref": "up-test", "currency": "SGD"}
        )
        assert status == 201
        # Another command from the same directory reaches the same servers, no flags needed.
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env["TALLY_DATA_DIR"] = str(stack.data_dir)
        created = subprocess.run(
            [TALLY, "keys", "create", "--role", "ops", "--name", "second"],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        ops_key = created.stdout.split("secret: ")[1].strip()
        assert request(f"{url}/v1/wallets/{wallet['id']}", ops_key)[0] == 200
        # The worker's counters reach the API's /metrics (shared multiprocess directory).
        submitted = requests.post(
            f"{url}/v1/transactions",
            json={"type": "deposit", "amount": "5.00", "currency": "SGD",
                  "destination_wallet_id": wallet["id"]},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "up-metrics"},
            timeout=30,
        )  # fmt: skip
        transaction_id = submitted.json()["id"]
        status, settled = request(f"{url}/v1/transactions/{transaction_id}?wait=20", key)
        assert settled["status"] == "completed"
        exposition = requests.get(f"{url}/metrics", timeout=30).text
        settled_samples = {
            (s.labels["type"], s.labels["status"], s.labels["failure_code"]): s.value
            for family in text_string_to_metric_families(exposition)
            for s in family.samples
            if s.name == "tally_transactions_settled_total"
        }
        assert settled_samples == {("deposit", "completed", "none"): 1.0}, exposition
    finally:
        stack.stop()
    assert (stack.data_dir / "runtime.env").exists()

    stack = TallyUp(workdir, port).start()
    try:
        status, again = request(f"{stack.url}/v1/wallets/{wallet['id']}", key)
        assert status == 200 and again["owner_ref"] == "up-test"
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[TallyUp]:
    """One ``tally up`` with embedded servers for the kill tests, stopped (and checked) at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="tally-up-"))  # not under pytest's root: see workdir
    (workdir / "Procfile").write_text(Path("Procfile").read_text())
    # Two API processes: a killed web master leaves children behind to be reaped.
    up = TallyUp(workdir, free_port(), env={"TALLY_WEB_WORKERS": "2"}).start()
    yield up
    up.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def process_group(pgid: int) -> list[int]:
    """Return the pids of the live processes in process group ``pgid`` (zombies are dead)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def listeners(port: int) -> set[int]:
    """Return the pids of the processes listening on TCP ``port``."""
    return {
        c.pid for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Return the pids of ``pid``'s children, grandchildren and so on; [] once it is gone."""
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def deposit_completes(stack: TallyUp, *, timeout_seconds: float) -> None:
    """Create a wallet and deposit into it with the client, the deposit under one key; await
    ``completed``.

    The client retries refused connections and 503s itself (the deposit with its
    key); ``until`` covers an outage longer than its retries.
    """
    key = json.loads((stack.data_dir / "api-keys.json").read_text())["service"]
    with Tally(stack.url, key, timeout=30) as tally:
        wallet = until(
            "a wallet created",
            lambda: tally.wallets.create(f"up-{uuid.uuid4()}", "SGD"),
            timeout_seconds=timeout_seconds,
        )
        idempotency_key = str(uuid.uuid4())
        deposit = until(
            "a deposit accepted",
            lambda: tally.transactions.deposit(
                "1.00", "SGD", wallet.id, idempotency_key=idempotency_key
            ),
            timeout_seconds=timeout_seconds,
        )

        def completed() -> bool:
            settled = tally.transactions.wait(deposit.id, timeout=5)
            assert settled.status == "completed", settled
            return True

        until("the deposit completed", completed, timeout_seconds=timeout_seconds)


def test_background_processes_run_at_a_lower_cpu_priority_than_the_api(stack: TallyUp) -> None:
    # TALLY_BACKGROUND_NICE (10 unless set) is added to the niceness they start
    # with, which is this test's; every process they fork keeps it.
    own = os.nice(0)
    background = min(19, own + get_settings().background_nice)
    if background == own:  # TALLY_BACKGROUND_NICE=0, or this test already at niceness 19
        pytest.skip("the background processes run at the API's niceness here")
    for program, expected in [("worker", background), ("webhooks", background),
                              ("beat", background), ("web", own)]:  # fmt: skip
        pid = stack.wait_running(program)
        niceness = {p: psutil.Process(p).nice() for p in [pid, *descendants(pid)]}
        assert set(niceness.values()) == {expected}, (program, niceness)


@pytest.mark.parametrize("program", ["worker", "beat", "web", "redis", "postgres"])
def test_tally_up_restarts_a_killed_process_and_serves_again(stack: TallyUp, program: str) -> None:
    old_pid = stack.supervised_pid(program)
    assert old_pid is not None, f"no {program} under supervisord:\n{stack.output()[-4000:]}"
    mark = len(stack.output())
    program_mark = len(stack.program_output(program))
    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    stack.wait_running(program, other_than=old_pid, timeout_seconds=60)
    respawn_seconds = time.monotonic() - killed
    assert f"exited: {program} (terminated by SIGKILL; not expected)" in stack.output()[mark:]
    # Nothing the killed process started outlives it (its process group is its pid).
    until(f"the killed {program}'s process group gone", lambda: not process_group(old_pid),
          timeout_seconds=30)  # fmt: skip
    until("/readyz answers 200",
          lambda: requests.get(f"{stack.url}/readyz", timeout=10).status_code == 200,
          timeout_seconds=120)  # fmt: skip
    ready_seconds = time.monotonic() - killed
    deposit_completes(stack, timeout_seconds=120)
    serving_seconds = time.monotonic() - killed
    report = (f"\n{program}: running again after {respawn_seconds:.1f}s, /readyz 200 after "
              f"{ready_seconds:.1f}s, a new deposit completed after {serving_seconds:.1f}s")  # fmt: skip
    if program == "web":
        # What is left of the killed server held the port; the new one must take it.
        new_pid = stack.wait_running("web", other_than=old_pid)
        until("the new web process listening on the port",
              lambda: listeners(stack.port) & {new_pid, *descendants(new_pid)},
              timeout_seconds=120)  # fmt: skip
        until("/readyz answers 200 from the new web process",
              lambda: requests.get(f"{stack.url}/readyz", timeout=10).status_code == 200,
              timeout_seconds=60)  # fmt: skip
        report += f", the new web process serving after {time.monotonic() - killed:.1f}s"
    if program == "beat":
        # The new beat waits for the killed one's lock to expire, takes it, then schedules.
        acquired = re.compile(r"beat: Acquired lock")
        sent = re.compile(r"Sending due task")
        locked = until(
            "the new beat taking the lock",
            lambda: acquired.search(stack.program_output("beat"), program_mark),
            timeout_seconds=120,
        )
        until("the new beat sending tasks",
              lambda: sent.search(stack.program_output("beat"), locked.end()),
              timeout_seconds=60)  # fmt: skip
        report += f", sending tasks after {time.monotonic() - killed:.1f}s"
    print(report)
