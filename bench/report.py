"""The benchmark's readable table: one row per figure, median, range over runs, ratio to pgbench."""

from __future__ import annotations

from typing import Any

#: (figure, label) in the order the table shows them; rows with no value are left out.
ROWS = (
    ("pgbench_tps", "pgbench TPC-B-like, tps"),
    ("accepted_per_second", "accepted (202) /s"),
    ("completed_per_second", "completed end to end /s"),
    ("intake_latency_ms_p50", "intake latency p50, ms"),
    ("intake_latency_ms_p99", "intake latency p99, ms"),
    ("terminal_latency_ms_p50", "submit -> terminal p50, ms"),
    ("terminal_latency_ms_p99", "submit -> terminal p99, ms"),
    ("health_latency_ms_p99", "/healthz p99, ms"),
    ("waiter_delay_ms_p50", "long-poll answer delay p50, ms"),
    ("waiter_delay_ms_p99", "long-poll answer delay p99, ms"),
    ("waits_measured", "long polls woken by a change"),
    ("waits_already_terminal", "long polls already terminal"),
    ("waits_expired", "long polls that ran out"),
    ("schedule_lag_ms_p99", "generator lag behind schedule p99, ms"),
    ("generator_cpu_share", "generator CPU share (1 = one core)"),
    ("cpu_us_per_transaction_api", "CPU per transaction: API, us"),
    ("cpu_us_per_transaction_worker", "CPU per transaction: worker, us"),
    ("cpu_us_per_transaction_webhooks", "CPU per transaction: webhook worker, us"),
    ("cpu_us_per_transaction_postgres", "CPU per transaction: PostgreSQL, us"),
    ("cpu_us_per_transaction_redis", "CPU per transaction: Redis, us"),
    ("cpu_us_per_transaction_other", "CPU per transaction: beat, supervisord, relay, us"),
    ("cpu_us_per_transaction_total", "CPU per transaction: stack total, us"),
    ("duration_seconds", "submission window, s"),
    ("end_to_end_seconds", "first submission -> last terminal, s"),
    ("accepted", "transactions accepted"),
    ("transactions_failed", "transactions failed"),
    ("transactions_unsettled", "transactions still pending"),
    ("errors_total", "request errors"),
)
#: The ratio figure printed beside each throughput figure.
RATIOS = {
    "accepted_per_second": "accepted_ratio_to_pgbench",
    "completed_per_second": "completed_ratio_to_pgbench",
}


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def describe(config: dict[str, Any]) -> str:
    """Return one line naming the workload, the load's shape and the stack measured."""
    load = (
        f"open loop at {config['rate_per_second']:g}/s over {config['connections']} connections"
        if config["rate_per_second"]
        else f"closed loop, {config['connections']} connections"
    )
    waiters = f", {config['waiters']} long-poll waiters" if config["workload"] == "longpoll" else ""
    stack = config["stack"]
    return (
        f"workload {config['workload']}, {load}{waiters}, {config['wallets']:,} wallets, "
        f"{config['runs']} run(s) of {config['duration_seconds']:g} s; stack {stack}"
    )


def table(report: dict[str, Any]) -> str:
    """Return the report (``bench.http.run_bench``'s) as a plain-text table, lines joined."""
    median, low, high = report["median"], report["min"], report["max"]
    header = ("figure", "median", "min - max", "ratio to pgbench")
    rows = [header]
    for name, label in ROWS:
        if median.get(name) is None:
            continue
        ratio = "1.000" if name == "pgbench_tps" else _number(median.get(RATIOS.get(name, "")))
        spread = f"{_number(low[name])} - {_number(high[name])}"
        rows.append((label, _number(median[name]), spread, ratio if ratio != "-" else ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [describe(report["config"]), ""]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    errors = report["errors"]
    by_kind = ", ".join(f"{kind} {count}" for kind, count in errors.items()) or "none"
    lines += ["", f"request errors by kind, all runs: {by_kind}"]
    return "\n".join(lines)
