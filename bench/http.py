"""``tally bench http``: the product measured the way clients meet it, over real HTTP.

One invocation: create and fund the wallets over the API (not measured), load
pgbench's tables, then ``runs`` times: pgbench's TPC-B-like workload on the
stack's PostgreSQL (the baseline), a measured phase of ``duration_seconds``
driven by the load generator in a process of its own (bench/loadgen.py), a
wait until every accepted transaction has left ``pending``, and the run's
figures from the client's observations and the database's timestamps
(bench/measure.py). The report holds every run's figures and their median,
minimum and maximum. docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click
import psycopg

from bench.baseline import Pgbench, libpq_url
from bench.funding import create_funded_wallets
from bench.loadgen import LoadPlan, LoadResult, generate
from bench.measure import read_outcomes, run_figures, summarise, wait_settled
from bench.stack import Stack, cpu_seconds_by_component

#: Connections pgbench leaves free on the server for the stack's own pools.
PGBENCH_CONNECTIONS_SPARE = 60


@dataclass(frozen=True)
class BenchOptions:
    """Hold the benchmark's knobs; the CLI's options map onto them one to one (docs/benchmarks.md)."""

    workload: str = "uniform"
    wallets: int = 10_000
    connections: int = 16
    rate_per_second: float | None = None
    waiters: int = 1_000
    runs: int = 3
    duration_seconds: float = 20.0
    timeout_seconds: float = 30.0
    wait_seconds: int = 30
    pgbench_scale: int = 10
    settle_timeout_seconds: float = 300.0


def _stderr(message: str) -> None:
    click.echo(message, err=True)


def _pgbench_clients(database_url: str, wanted: int) -> int:
    # pgbench gets the benchmark's client count, but no more than the server can
    # take beside the stack's pools: past max_connections it would fail outright.
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute("SELECT current_setting('max_connections')::int").fetchone()
    assert row is not None
    return max(1, min(wanted, int(row[0]) - PGBENCH_CONNECTIONS_SPARE))


def _collect(process: Any, results: Any, timeout_seconds: float) -> tuple[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            status, payload = results.get(timeout=0.5)
            return status, payload
        except queue.Empty:
            if not process.is_alive():
                return "error", f"the load generator exited with code {process.exitcode}"
    return "error", f"the load generator gave no result within {timeout_seconds:.0f} s"


def _run_generator(plan: LoadPlan, label: str) -> LoadResult:
    """Run ``plan`` in a spawned process, with a progress bar over its measured phase.

    Raises:
        RuntimeError: the generator failed; the message carries its traceback.
    """
    # spawn, not fork: the child starts clean, holding none of this process's
    # connections or threads, and its CPU time is only the generator's.
    context = multiprocessing.get_context("spawn")
    progress = context.Value("q", 0, lock=False)  # written by the child only
    started, results = context.Event(), context.Queue()
    process = context.Process(target=generate, args=(plan, progress, started, results), daemon=True)
    process.start()
    try:
        while not started.wait(0.2):
            if not process.is_alive():
                break
        steps, tick_seconds = max(1, round(plan.duration_seconds * 10)), 0.1
        progressbar: Any = click.progressbar(
            length=steps, label=label, file=sys.stderr,
            item_show_func=lambda n: None if n is None else f"{n:,} accepted",
        )  # fmt: skip
        with progressbar as bar:
            begin, done = time.monotonic(), 0
            while done < steps and process.is_alive():
                time.sleep(tick_seconds)
                now = min(steps, int((time.monotonic() - begin) / tick_seconds))
                bar.update(now - done, current_item=progress.value)
                done = now
        # Past the window: open-loop stragglers and long polls may take their full timeouts.
        tail_seconds = plan.wait_seconds + 2 * plan.timeout_seconds + 60
        status, payload = _collect(process, results, tail_seconds)
        process.join(30)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise RuntimeError(f"load generator failed:\n{payload}")
    result: LoadResult = payload
    return result


def _set_up(stack: Stack, options: BenchOptions, log: Callable[[str], None]) -> list[str]:
    log(f"setting up {options.wallets:,} funded wallets over HTTP (not measured) ...")
    began = time.monotonic()
    wallets, deposits = create_funded_wallets(
        stack.url, stack.service_key, workload=options.workload, count=options.wallets
    )
    pending = wait_settled(
        stack.database_url, deposits, timeout_seconds=options.settle_timeout_seconds
    )
    failed = [
        o for o in read_outcomes(stack.database_url, deposits).values() if o.status != "completed"
    ]
    if pending or failed:
        raise RuntimeError(
            f"funding deposits: {pending} still pending, {len(failed)} not completed"
        )
    log(f"  {options.wallets:,} wallets funded in {time.monotonic() - began:.1f} s")
    return wallets


def run_bench(
    stack: Stack, options: BenchOptions, *, log: Callable[[str], None] = _stderr
) -> dict[str, Any]:
    """Run the whole benchmark against ``stack`` and return its report.

    The generator is a spawned process, which imports the caller's ``__main__``:
    a script calling this needs the ``if __name__ == "__main__":`` guard (the
    ``tally`` command has it).

    Returns:
        ``{"config", "runs": [figures per run], "median", "min", "max", "errors"}``:
        figures as bench/measure.py names them (throughput per second, latencies
        in milliseconds, durations in seconds), ``errors`` summed by kind.

    Raises:
        RuntimeError: set-up failed, pgbench failed, or the generator failed.
    """
    waiters = options.waiters if options.workload == "longpoll" else 0
    wallets = _set_up(stack, options, log)
    pgbench = Pgbench(stack.database_url, scale=options.pgbench_scale)
    log(f"loading pgbench's tables (scale {options.pgbench_scale}) ...")
    pgbench.initialise()
    pgbench_clients = _pgbench_clients(stack.database_url, options.connections)
    runs = []
    for index in range(options.runs):
        log(f"run {index + 1}/{options.runs}: pgbench, {pgbench_clients} clients ...")
        tps = pgbench.run(clients=pgbench_clients, duration_seconds=options.duration_seconds)
        plan = LoadPlan(
            url=stack.url, service_key=stack.service_key, workload=options.workload,
            wallets=wallets, duration_seconds=options.duration_seconds,
            connections=options.connections, rate_per_second=options.rate_per_second,
            waiters=waiters, wait_seconds=options.wait_seconds,
            timeout_seconds=options.timeout_seconds, seed=index + 1,
        )  # fmt: skip
        cpu_before = cpu_seconds_by_component(stack.root) if stack.root else None
        load = _run_generator(plan, f"run {index + 1}/{options.runs}")
        log(f"  waiting for {len(load.accepted_ids):,} transactions to leave pending ...")
        wait_settled(
            stack.database_url, load.accepted_ids, timeout_seconds=options.settle_timeout_seconds
        )
        cpu_seconds = None
        if stack.root and cpu_before is not None:
            cpu_after = cpu_seconds_by_component(stack.root)
            cpu_seconds = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        outcomes = read_outcomes(stack.database_url, load.accepted_ids)
        runs.append(
            run_figures(
                load, outcomes, pgbench_tps=tps, waiters=bool(waiters), cpu_seconds=cpu_seconds
            )
        )
    config = {
        **asdict(options),
        "waiters": waiters,
        "pgbench_clients": pgbench_clients,
        "url": stack.url,
        "stack": stack.description,
    }
    return {"config": config, "runs": runs, **summarise(runs)}
