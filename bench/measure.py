"""Figures of one run: the client's observations joined with the database's timestamps.

Submit → terminal is read from PostgreSQL after the run, not polled over HTTP:
polling would add load and round the figure up to the polling interval. A
transaction's terminal time is ``completed_at``, or ``updated_at`` for one
that failed (both are set by the commit that ends ``pending``; PostgreSQL's
``now()`` is its transaction's start, so they precede that commit by the
apply's own duration). Latencies of submissions and long polls use the
client's clock, which is the database's when the stack runs on this machine.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.baseline import libpq_url
from bench.loadgen import LoadResult
from bench.stack import COMPONENTS

#: CPU per settled transaction by component (stack processes only); None for a stack at a URL.
CPU_FIGURES = tuple(f"cpu_us_per_transaction_{name}" for name in (*COMPONENTS, "total"))

#: Figures of the long-poll waiters; None in runs without waiters.
WAITER_FIGURES = (
    "waiter_delay_ms_p50",
    "waiter_delay_ms_p99",
    "waits_measured",
    "waits_already_terminal",
    "waits_expired",
)


@dataclass(frozen=True)
class Outcome:
    """Hold a submitted transaction's status and times (Unix seconds) as the database has them."""

    status: str
    created_at: float
    terminal_at: float


def percentile(values: list[float], fraction: float) -> float | None:
    """Return the ``fraction`` quantile (0..1) of ``values``, linearly interpolated; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _rounded(name: str, value: Any) -> Any:
    # Ratios and shares are below 1 and need more digits than rates and milliseconds.
    if isinstance(value, float):
        return round(value, 4 if "ratio" in name or "share" in name else 2)
    return value


def wait_settled(database_url: str, ids: list[str], *, timeout_seconds: float) -> int:
    """Wait until none of ``ids`` is ``pending`` or ``timeout_seconds`` pass; return how many still are."""
    pending = [uuid.UUID(i) for i in ids]
    deadline = time.monotonic() + timeout_seconds
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        while pending:
            # Ask only about the ones pending last time: the list shrinks as the worker drains.
            rows = connection.execute(
                "SELECT id FROM transactions WHERE id = ANY(%s) AND status = 'pending'", (pending,)
            ).fetchall()
            pending = [row[0] for row in rows]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return len(pending)


def read_outcomes(database_url: str, ids: list[str]) -> dict[str, Outcome]:
    """Return the status, ``created_at`` and terminal time of each of ``ids`` found, by id."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        rows = connection.execute(
            """
            SELECT id::text, status,
                   extract(epoch FROM created_at)::float8,
                   extract(epoch FROM coalesce(completed_at, updated_at))::float8
            FROM transactions WHERE id = ANY(%s)
            """,
            ([uuid.UUID(i) for i in ids],),
        ).fetchall()
    return {row[0]: Outcome(row[1], row[2], row[3]) for row in rows}


def _waiter_figures(load: LoadResult, outcomes: dict[str, Outcome]) -> dict[str, Any]:
    delays, already_terminal, expired = [], 0, 0
    for transaction_id, sent_at, answered_at, status in load.waits:
        outcome = outcomes.get(transaction_id)
        if status == "pending" or outcome is None:
            expired += 1  # the wait ran out before the transaction left pending
        elif sent_at >= outcome.terminal_at:
            already_terminal += 1  # nothing to wait for: not a wake-up
        else:
            delays.append(answered_at - outcome.terminal_at)
    values = (_ms(percentile(delays, 0.50)), _ms(percentile(delays, 0.99)), len(delays),
              already_terminal, expired)  # fmt: skip
    return dict(zip(WAITER_FIGURES, values, strict=True))


def _cpu_figures(cpu_seconds: dict[str, float] | None, settled: int) -> dict[str, Any]:
    if not cpu_seconds or not settled:
        return dict.fromkeys(CPU_FIGURES, None)
    values = [cpu_seconds[name] for name in COMPONENTS]
    per_transaction = [seconds / settled * 1e6 for seconds in (*values, sum(values))]
    return dict(zip(CPU_FIGURES, per_transaction, strict=True))


def run_figures(
    load: LoadResult,
    outcomes: dict[str, Outcome],
    *,
    pgbench_tps: float,
    waiters: bool,
    cpu_seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Return every figure of one run as a flat dict (see docs/benchmarks.md for each).

    Args:
        load: what the generator observed.
        outcomes: ``read_outcomes`` of its accepted ids, after they settled.
        pgbench_tps: the run's baseline, transactions per second.
        waiters: whether the run had long-poll waiters (else their figures are None).
        cpu_seconds: CPU seconds each stack component used from the start of the
            load to the last settlement (``bench.stack.cpu_seconds_by_component``
            differences); None when the stack's processes are not known. Reported
            as microseconds per settled transaction.
    """
    accepted = len(load.accepted_ids)
    settled = [o for o in outcomes.values() if o.status != "pending"]
    unsettled = accepted - len(settled)
    end_to_end_seconds = None
    if settled and unsettled == 0:
        end_to_end_seconds = max(o.terminal_at for o in settled) - min(
            o.created_at for o in settled
        )
    accepted_per_second = (
        accepted / load.submit_window_seconds if load.submit_window_seconds else None
    )
    completed_per_second = len(settled) / end_to_end_seconds if end_to_end_seconds else None
    terminal = [o.terminal_at - o.created_at for o in settled]
    figures: dict[str, Any] = {
        "pgbench_tps": round(pgbench_tps, 1),
        "accepted_per_second": accepted_per_second,
        "completed_per_second": completed_per_second,
        "accepted_ratio_to_pgbench": accepted_per_second and accepted_per_second / pgbench_tps,
        "completed_ratio_to_pgbench": completed_per_second and completed_per_second / pgbench_tps,
        "intake_latency_ms_p50": _ms(percentile(load.intake_latencies_seconds, 0.50)),
        "intake_latency_ms_p99": _ms(percentile(load.intake_latencies_seconds, 0.99)),
        "terminal_latency_ms_p50": _ms(percentile(terminal, 0.50)),
        "terminal_latency_ms_p99": _ms(percentile(terminal, 0.99)),
        "health_latency_ms_p99": _ms(percentile(load.health_latencies_seconds, 0.99)),
        "schedule_lag_ms_p99": _ms(percentile(load.schedule_lags_seconds, 0.99)),
        "generator_cpu_share": load.cpu_seconds / load.wall_seconds if load.wall_seconds else None,
        "duration_seconds": load.submit_window_seconds,
        "end_to_end_seconds": end_to_end_seconds,
        "submitted": load.submitted,
        "accepted": accepted,
        "transactions_failed": sum(1 for o in settled if o.status == "failed"),
        "transactions_unsettled": unsettled,
        "errors_total": sum(load.errors.values()),
        "errors": dict(sorted(load.errors.items())),
    }
    figures.update(
        _waiter_figures(load, outcomes) if waiters else dict.fromkeys(WAITER_FIGURES, None)
    )
    figures.update(_cpu_figures(cpu_seconds, len(settled)))
    return {name: _rounded(name, value) for name, value in figures.items()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return ``{"median", "min", "max"}`` of each numeric figure over ``runs`` (None ignored).

    ``errors`` is summed by kind over the runs instead, under ``"errors"``.
    """
    summary: dict[str, dict[str, Any]] = {"median": {}, "min": {}, "max": {}}
    for name in runs[0]:
        if name == "errors":
            continue
        values = [run[name] for run in runs if isinstance(run.get(name), int | float)]
        median: float | None = None
        if values:
            median = statistics.median(values)
            if all(isinstance(v, int) for v in values) and float(median).is_integer():
                median = int(median)  # a count stays a count when the median falls on one
        summary["median"][name] = _rounded(name, median)
        summary["min"][name] = min(values) if values else None
        summary["max"][name] = max(values) if values else None
    totals: dict[str, int] = {}
    for run in runs:
        for kind, count in run["errors"].items():
            totals[kind] = totals.get(kind, 0) + count
    summary["errors"] = dict(sorted(totals.items()))
    return summary
