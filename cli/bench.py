"""``tally bench``: measure throughput on private servers and print the figures as JSON."""

from __future__ import annotations

import json

import click


@click.group("bench", invoke_without_command=True)
@click.pass_context
def bench(context: click.Context) -> None:
    """Run the benchmarks (``tally bench`` alone runs ``pipeline``)."""
    if context.invoked_subcommand is None:
        context.invoke(pipeline)


@bench.command("pipeline")
@click.option("--transactions", default=2000, show_default=True, help="Transfers per run.")
@click.option("--runs", default=3, show_default=True, help="Runs; figures are medians.")
@click.option("--pgbench-seconds", default=10, show_default=True)
@click.option("--concurrency", default=2, show_default=True, help="Worker pool processes.")
def pipeline(transactions: int, runs: int, pgbench_seconds: int, concurrency: int) -> None:
    """Intake, end-to-end and drain throughput, as ratios to pgbench on the same PostgreSQL."""
    from bench.pipeline import run

    figures = run(
        transactions=transactions,
        runs=runs,
        pgbench_seconds=pgbench_seconds,
        concurrency=concurrency,
    )
    click.echo(json.dumps(figures, indent=2))


@bench.command(
    "maintenance", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.pass_context
def maintenance(context: click.Context) -> None:
    """Snapshot, archive and reconcile on a seeded ledger (``--entries``, ``--wallets``, ``--runs``)."""
    from bench.maintenance import main as run_maintenance

    run_maintenance(list(context.args))
