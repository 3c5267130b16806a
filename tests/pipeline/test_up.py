"""``tally up``: the whole stack from one command, stopped cleanly, and its data found again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from cli.devservers import free_port

pytestmark = pytest.mark.pipeline

TALLY = str(Path(sys.executable).parent / "tally")


def start_up(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TALLY_PORT=str(port), TALLY_DATA_DIR=str(workdir / ".tally"),
               TALLY_WORKER_CONCURRENCY="1", TALLY_WEB_WORKERS="1", TALLY_LOG_LEVEL="INFO")  # fmt: skip
    log = workdir / f"up-{time.time_ns()}.log"
    process = subprocess.Popen(
        [TALLY, "up"], cwd=workdir, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while b"Tally is up at" not in log.read_bytes():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return process, log


def request(url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return response.status, json.loads(response.read())


def processes_under(path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(cmdline)
    return found


def stop(process: subprocess.Popen[bytes], workdir: Path) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    deadline = time.monotonic() + 20
    while processes_under(workdir / ".tally") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_under(workdir / ".tally") == []


def test_tally_up_serves_stops_everything_and_restarts_on_its_data(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "Procfile").write_text(Path("Procfile").read_text())
    process, log = start_up(tmp_path, port)
    try:
        key = json.loads((tmp_path / ".tally" / "api-keys.json").read_text())["service"]
        assert key in log.read_text()
        url = f"http://127.0.0.1:{port}"
        status, wallet = request(
            f"{url}/v1/wallets", key, {"owner_ref": "up-test", "currency": "SGD"}
        )
        assert status == 201
        # Another command from the same directory reaches the same servers, no flags needed.
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env["TALLY_DATA_DIR"] = str(tmp_path / ".tally")
        created = subprocess.run(
            [TALLY, "keys", "create", "--role", "ops", "--name", "second"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        ops_key = created.stdout.split("secret: ")[1].strip()
        assert request(f"{url}/v1/wallets/{wallet['id']}", ops_key)[0] == 200
        # The worker's counters reach the API's /metrics (shared multiprocess directory).
        submitted = urllib.request.Request(
            f"{url}/v1/transactions",
            data=json.dumps({"type": "deposit", "amount": "5.00", "currency": "SGD",
                             "destination_wallet_id": wallet["id"]}).encode(),
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "up-metrics"},
        )  # fmt: skip
        with urllib.request.urlopen(submitted, timeout=10) as response:
            transaction_id = json.loads(response.read())["id"]
        status, settled = request(f"{url}/v1/transactions/{transaction_id}?wait=20", key)
        assert settled["status"] == "completed"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            exposition = response.read().decode()
        assert 'tally_transactions_settled_total{status="completed"} 1.0' in exposition
    finally:
        stop(process, tmp_path)
    assert (tmp_path / ".tally" / "runtime.env").exists()

    process, _ = start_up(tmp_path, port)
    try:
        status, again = request(f"http://127.0.0.1:{port}/v1/wallets/{wallet['id']}", key)
        assert status == 200 and again["owner_ref"] == "up-test"
    finally:
        stop(process, tmp_path)
