"""``tally bench http`` against a real stack: a smoke test of the tool, never of the stack's speed.

Both runs share one stack started the way the tool starts its own
(``bench.stack.started_stack``: ``tally up`` in a temporary directory); its
teardown fails if any process of that stack outlives the SIGTERM.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.measure import CPU_FIGURES
from bench.stack import COMPONENTS, Stack, cpu_seconds_by_component, started_stack

pytestmark = pytest.mark.pipeline

TALLY = str(Path(sys.executable).parent / "tally")

#: Figures every run reports, with a value whatever the machine's speed.
FIGURES = (
    "pgbench_tps",
    "accepted_per_second",
    "completed_per_second",
    "accepted_ratio_to_pgbench",
    "completed_ratio_to_pgbench",
    "intake_latency_ms_p50",
    "intake_latency_ms_p99",
    "terminal_latency_ms_p50",
    "terminal_latency_ms_p99",
    "health_latency_ms_p99",
    "generator_cpu_share",
    "duration_seconds",
    "end_to_end_seconds",
    "submitted",
    "accepted",
    "transactions_failed",
    "transactions_unsettled",
    "errors_total",
)
#: Figures that may be None: the open loop's lag, and the waiters' figures outside longpoll
#: (a wait's delay exists only if the wait began before its transaction settled).
OPTIONAL_FIGURES = (
    "schedule_lag_ms_p99",
    "waiter_delay_ms_p50",
    "waiter_delay_ms_p99",
    "waits_measured",
    "waits_already_terminal",
    "waits_expired",
    # Against --url the stack's processes are unknown: no CPU figures.
    *CPU_FIGURES,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Threads to spare beyond the 20 waiters, so the smoke test does not depend on
    # how the API schedules long polls.
    with started_stack(web_workers=1, web_threads=32, worker_concurrency=1) as running:
        yield running


def bench_json(stack: Stack, *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [TALLY, "bench", "http", "--url", stack.url, "--service-key", stack.service_key,
         "--database-url", stack.database_url, "--duration", "2", "--runs", "1",
         "--wallets", "50", "--connections", "4", "--pgbench-scale", "1", "--json", *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "args", [(), ("--workload", "longpoll", "--waiters", "20")], ids=["uniform", "longpoll"]
)
def test_bench_http_reports_every_figure_and_no_errors(stack: Stack, args: tuple[str, ...]) -> None:
    report = bench_json(stack, *args)

    (run,) = report["runs"]
    for figures in (run, report["median"], report["min"], report["max"]):
        assert set(FIGURES + OPTIONAL_FIGURES) <= figures.keys()
        assert [name for name in FIGURES if figures[name] is None] == []
    assert run["errors"] == {} and report["errors"] == {} and run["errors_total"] == 0
    assert run["accepted"] > 0 and run["accepted"] == run["submitted"]
    assert run["transactions_unsettled"] == 0 and run["transactions_failed"] == 0
    assert report["config"]["url"] == stack.url
    if "longpoll" in args:
        waits = run["waits_measured"] + run["waits_already_terminal"] + run["waits_expired"]
        assert waits > 0
    else:
        assert run["waits_measured"] is None


def test_cpu_time_is_read_for_every_component_of_a_started_stack(stack: Stack) -> None:
    import urllib.request

    def create_wallet() -> None:
        body = json.dumps({"owner_ref": f"cpu-{uuid.uuid4()}", "currency": "SGD"}).encode()
        request = urllib.request.Request(
            f"{stack.url}/v1/wallets", data=body, method="POST",
            headers={"Authorization": f"Bearer {stack.service_key}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201

    assert stack.root is not None
    before = cpu_seconds_by_component(stack.root)
    # The kernel counts CPU time in clock ticks (10 ms), and a fast machine stores
    # 50 wallets within one tick of PostgreSQL's time: go on until both moved.
    deadline = time.monotonic() + 120
    while True:
        for _ in range(50):
            create_wallet()
        after = cpu_seconds_by_component(stack.root)
        if all(after[name] > before[name] for name in ("api", "postgres")):
            break
        # The API served the requests and PostgreSQL stored the wallets.
        assert time.monotonic() < deadline, (before, after)
    assert set(after) == set(COMPONENTS)
    # Every process of a running stack has used some CPU since it started.
    for name in ("api", "worker", "webhooks", "postgres", "redis", "other"):
        assert after[name] > 0, name
