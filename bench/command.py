"""``tally bench``: measure the product over HTTP (``http``, the default) or its maintenance jobs.

The ``tally`` command loads this group by name only when ``tally bench`` runs
(``cli.main``), so that the production image, which carries no bench/, serves
without it, and cli/ never imports bench/.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import click

from bench.workloads import WORKLOADS


@click.group("bench", invoke_without_command=True)
@click.pass_context
def bench(context: click.Context) -> None:
    """Run the benchmarks (``tally bench`` alone runs ``http`` with its defaults)."""
    if context.invoked_subcommand is None:
        context.invoke(http)


@bench.command("http")
@click.option("--url", help="Base URL of a running stack. Default: start one with `tally up`.")
@click.option("--service-key", help="Its service API key (with --url).")
@click.option(
    "--ops-key", default="", help="Its ops API key (with --url; no workload needs it yet)."
)
@click.option("--database-url", help="Its PostgreSQL URL, read after each run (with --url).")
@click.option(
    "--web-workers", type=click.IntRange(1), help="TALLY_WEB_WORKERS of the stack started."
)
@click.option(
    "--web-threads", type=click.IntRange(1), help="TALLY_WEB_THREADS of the stack started."
)
@click.option("--worker-concurrency", type=click.IntRange(1),
              help="TALLY_WORKER_CONCURRENCY of the stack started.")  # fmt: skip
@click.option(
    "--workload", type=click.Choice(list(WORKLOADS)), default="uniform", show_default=True
)
@click.option("--wallets", type=click.IntRange(2), default=10_000, show_default=True,
              help="Funded SGD wallets.")  # fmt: skip
@click.option("--connections", type=click.IntRange(1), default=16, show_default=True,
              help="Closed loop: clients submitting back to back. Open loop: connection pool size. Also pgbench's clients.")  # fmt: skip
@click.option("--rate", type=click.FloatRange(0, min_open=True),
              help="Open loop: submissions per second at fixed times. Default: closed loop.")  # fmt: skip
@click.option("--waiters", type=click.IntRange(1), default=1_000, show_default=True,
              help="longpoll: clients long-polling pending transactions.")  # fmt: skip
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True,
              help="Measured runs; figures are medians with min-max.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=20.0,
              show_default=True, help="Seconds of each measured run (and of each pgbench run).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0,
              show_default=True, help="Seconds before a request counts as a timeout.")  # fmt: skip
@click.option("--pgbench-scale", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of the table."
)
def http(
    url: str | None, service_key: str | None, ops_key: str, database_url: str | None,
    web_workers: int | None, web_threads: int | None, worker_concurrency: int | None,
    workload: str, wallets: int, connections: int, rate: float | None, waiters: int,
    runs: int, duration: float, timeout: float, pgbench_scale: int, as_json: bool,
) -> None:  # fmt: skip
    """Measure throughput and latency over real HTTP, as ratios to pgbench on the same PostgreSQL."""
    from bench.http import BenchOptions, run_bench
    from bench.report import table
    from bench.stack import Stack, started_stack

    sizes = (web_workers, web_threads, worker_concurrency)
    if url is not None:
        if not service_key or not database_url:
            raise click.UsageError("--url needs --service-key and --database-url")
        if any(size is not None for size in sizes):
            raise click.UsageError("--web-workers/--web-threads/--worker-concurrency size a stack this command starts, not one at --url")  # fmt: skip
        target: Any = contextlib.nullcontext(
            Stack(url.rstrip("/"), service_key, ops_key, database_url, description=f"at {url}")
        )
    else:
        target = started_stack(
            web_workers=web_workers, web_threads=web_threads, worker_concurrency=worker_concurrency
        )
    options = BenchOptions(
        workload=workload, wallets=wallets, connections=connections, rate_per_second=rate,
        waiters=waiters, runs=runs, duration_seconds=duration, timeout_seconds=timeout,
        pgbench_scale=pgbench_scale,
    )  # fmt: skip
    with target as stack:
        if url is None:
            click.echo(f"stack up at {stack.url}", err=True)
        report = run_bench(stack, options)
    click.echo(json.dumps(report, indent=2) if as_json else table(report))


@bench.command("chains")
@click.option("--url", help="Base URL of a running stack. Default: start one with `tally up`.")
@click.option("--service-key", help="Its service API key (with --url).")
@click.option("--database-url", help="Its PostgreSQL URL (with --url).")
@click.option("--chains", "chain_count", type=click.IntRange(1), default=40, show_default=True)
@click.option("--hops", type=click.IntRange(1), default=5, show_default=True,
              help="Hops per chain (a chain has one wallet more).")  # fmt: skip
@click.option("--parallel", type=click.IntRange(1), default=8, show_default=True,
              help="Chains submitted at once.")  # fmt: skip
@click.option("--pause", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds the workers are stopped in the second round (a stack this command starts).")  # fmt: skip
def chains(
    url: str | None, service_key: str | None, database_url: str | None, chain_count: int,
    hops: int, parallel: int, pause: float,
) -> None:  # fmt: skip
    """Check that money sent along chains of wallets is delivered: applied in acceptance order."""
    from bench.chains import run_chains
    from bench.stack import Stack, started_stack

    if url is not None:
        if not service_key or not database_url:
            raise click.UsageError("--url needs --service-key and --database-url")
        target: Any = contextlib.nullcontext(
            Stack(url.rstrip("/"), service_key, "", database_url, description=f"at {url}")
        )
    else:
        target = started_stack(web_workers=None, web_threads=None, worker_concurrency=None)
    with target as stack:
        report = run_chains(
            stack, chains=chain_count, hops=hops, parallel=parallel, pause_seconds=pause
        )
    click.echo(json.dumps(report, indent=2))


@bench.command(
    "maintenance", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.pass_context
def maintenance(context: click.Context) -> None:
    """Snapshot, archive and reconcile on a seeded ledger (``--entries``, ``--wallets``, ``--runs``)."""
    from bench.maintenance import main as run_maintenance

    run_maintenance(list(context.args))


@bench.command(
    "metadata", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.pass_context
def metadata(context: click.Context) -> None:
    """Filter 1,000,000 transactions by metadata (``--transactions``, ``--per-batch``, ``--runs``)."""
    from bench.metadata_filter import main as run_metadata

    run_metadata(list(context.args))
