"""Maintenance jobs at scale: wall time and peak memory of snapshot, archive, reconcile.

``python -m bench.maintenance --entries 1000000 --wallets 10000`` seeds a ledger
of that many entries over that many wallets, spread over ``--days`` closed
days, into the scratch database ``DATABASE_URL`` (refused if it holds wallets
other than the benchmark's), or into a private PostgreSQL it starts (durable:
fsync on) and stops. Then, ``--runs`` times, it resets the maintenance state
(no snapshots, nothing archived, no runs) and runs each job in a fresh child
process, which reports the job's wall time and its peak resident memory
(``ru_maxrss``: the process's high-water mark, imports included) and the
resident memory before the job started. Medians are printed; figures go to
docs/maintenance.md.

Seeding is set-based (``INSERT ... SELECT`` over ``generate_series`` with
window functions for sequences and running balances), so it keeps every
invariant: gapless sequences, correct ``balance_after``, the system wallet as
counterparty, and ``created_at`` growing with ``sequence``. Resetting moves
archived rows back with the archive tables' append-only triggers disabled:
something only this benchmark does, on its own database.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.scratch import scratch_database

#: In order: reconciliation before any snapshot exists (every entry summed), then the
#: snapshot job, the archive job (half of the history), and reconciliation from snapshots.
PHASES = ("reconcile_cold", "snapshot", "archive", "reconcile")


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(url)  # no statement_timeout: seeding runs long statements


def _seed(url: str, *, entries: int, wallets: int, days: int) -> None:
    from sqlalchemy import text

    transfers = max(0, (entries - 2 * wallets) // 2)
    with _engine(url).begin() as connection:
        run = connection.execute
        existing = run(
            text(
                "SELECT count(*) FROM wallets WHERE NOT is_system AND owner_ref NOT LIKE 'bench-%'"
            )
        ).scalar_one()
        if existing:
            raise SystemExit("DATABASE_URL holds wallets not made by this benchmark: refusing")
        if run(text("SELECT count(*) FROM wallets WHERE owner_ref LIKE 'bench-%'")).scalar_one():
            print("database already seeded; reusing it", file=sys.stderr)
            return
        run(text("SET LOCAL work_mem = '256MB'"))
        run(
            text(
                "INSERT INTO api_keys (id, name, role, key_hash) "
                "VALUES (gen_random_uuid(), 'bench', 'service', md5(random()::text))"
            )
        )
        run(
            text(
                "INSERT INTO wallets (id, owner_ref, currency) "
                "SELECT gen_random_uuid(), 'bench-' || i, 'SGD' FROM generate_series(1, :n) i"
            ),
            {"n": wallets},
        )
        run(
            text(
                "CREATE TEMP TABLE bw ON COMMIT DROP AS SELECT (row_number() OVER (ORDER BY id))::int"
                " - 1 AS idx, id FROM wallets WHERE owner_ref LIKE 'bench-%'"
            )
        )
        run(text("CREATE UNIQUE INDEX ON bw (idx)"))
        # One deposit per wallet at the start, then transfers evenly over the days.
        run(
            text(
                """
                CREATE TEMP TABLE bt ON COMMIT DROP AS
                WITH t0 AS (
                    SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                           - make_interval(days => :days) AS start_at
                )
                SELECT gen_random_uuid() AS id, i AS n, 'deposit' AS type,
                       (SELECT id FROM wallets WHERE currency = 'SGD' AND is_system) AS src,
                       bw.id AS dst, 1000000000::bigint AS amount,
                       t0.start_at + make_interval(secs => i * 0.000001) AS at
                FROM generate_series(0, :wallets - 1) i JOIN bw ON bw.idx = i, t0
                UNION ALL
                SELECT gen_random_uuid(), :wallets + g.i, 'transfer', s.id, d.id,
                       1 + (g.i * 31) % 1000,
                       t0.start_at + interval '1 second'
                           + (g.i - 1) * (make_interval(days => :days) - interval '2 seconds') / :t
                FROM (SELECT i, (i * 7919) % :wallets AS s_idx FROM generate_series(1::bigint, :t) i) g
                JOIN bw s ON s.idx = g.s_idx
                JOIN bw d ON d.idx = (g.s_idx + 1 + g.i % (:wallets - 1)) % :wallets
                CROSS JOIN t0
                """
            ),
            {"days": days, "wallets": wallets, "t": max(transfers, 1)},
        )
        run(
            text(
                "INSERT INTO transactions (id, type, status, amount_minor, currency, "
                "source_wallet_id, destination_wallet_id, lane_wallet_id, attempts, api_key_id, "
                "idempotency_key, request_hash, created_at, updated_at, completed_at) "
                "SELECT id, type, 'completed', amount, 'SGD', src, dst, "
                "CASE type WHEN 'deposit' THEN dst ELSE src END, 1, "
                "(SELECT id FROM api_keys WHERE name = 'bench'), id::text, 'bench', at, at, at "
                "FROM bt ORDER BY n"
            )
        )
        run(
            text(
                """
                INSERT INTO ledger_entries (wallet_id, transaction_id, transaction_type, direction,
                    amount_minor, balance_after_minor, sequence, created_at)
                SELECT wallet_id, tid, type, direction, amount,
                       sum(signed) OVER w, row_number() OVER w, at
                FROM (
                    SELECT src AS wallet_id, id AS tid, type, 'debit' AS direction, amount,
                           -amount AS signed, at, n, 0 AS side FROM bt
                    UNION ALL
                    SELECT dst, id, type, 'credit', amount, amount, at, n, 1 FROM bt
                ) legs
                WINDOW w AS (PARTITION BY wallet_id ORDER BY n, side ROWS UNBOUNDED PRECEDING)
                ORDER BY at, n, side
                """
            )
        )
        run(
            text(
                """
                UPDATE wallets w SET balance_minor = last.balance_after_minor,
                                     last_sequence = last.sequence
                FROM (SELECT DISTINCT ON (wallet_id) wallet_id, balance_after_minor, sequence
                      FROM ledger_entries ORDER BY wallet_id, sequence DESC) last
                WHERE w.id = last.wallet_id
                """
            )
        )


def _reset(url: str) -> None:
    """Undo the jobs: no snapshots, archived rows back in the live tables, no runs."""
    from sqlalchemy import text

    from shared.models import LedgerEntry, Transaction

    entry_columns = ", ".join(c.name for c in LedgerEntry.__table__.columns)
    transaction_columns = ", ".join(c.name for c in Transaction.__table__.columns)
    engine = _engine(url)
    with engine.begin() as connection:
        run = connection.execute
        run(text("TRUNCATE balance_snapshots, reconciliation_runs"))
        for table in ("ledger_entries_archive", "transactions_archive"):
            run(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        run(
            text(
                f"INSERT INTO transactions ({transaction_columns}) "
                f"SELECT {transaction_columns} FROM transactions_archive ORDER BY created_at"
            )
        )
        run(
            text(
                f"INSERT INTO ledger_entries ({entry_columns}) "
                f"SELECT {entry_columns} FROM ledger_entries_archive ORDER BY id"
            )
        )
        run(text("TRUNCATE ledger_entries_archive, transactions_archive"))
        for table in ("ledger_entries_archive", "transactions_archive"):
            run(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def _phase(name: str, days: int) -> dict[str, Any]:
    """Run one job in this process; return its wall time and memory figures."""
    import datetime as dt

    import psutil

    from shared import db
    from shared.config import get_settings
    from shared.services import archive, reconciliation, snapshots

    db.get_engine()
    baseline_bytes = psutil.Process().memory_info().rss
    peak_reset = _reset_peak_rss()
    started = time.perf_counter()
    if name == "snapshot":
        with db.transaction() as session:
            result: Any = snapshots.take_snapshots(session).snapshots_created
    elif name == "archive":
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        summary = archive.archive_before(
            cutoff=today - dt.timedelta(days=days / 2),
            chunk_size=get_settings().archive_chunk_size,
        )
        result = [summary.entries_archived, summary.transactions_archived]
    else:
        with db.transaction() as session:
            run_id = reconciliation.start_reconciliation(session)
        run = reconciliation.run_reconciliation(run_id)
        result = [run.status, run.wallets_checked]
    wall_seconds = time.perf_counter() - started
    peak_bytes = _peak_rss_bytes() if peak_reset else None
    if peak_bytes is None:  # the high-water mark of the whole process, imports included
        peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "phase": name,
        "wall_seconds": wall_seconds,
        "peak_rss_mib": peak_bytes / 2**20,
        "baseline_rss_mib": baseline_bytes / 2**20,
        "peak_is_job_only": peak_reset,
        "result": result,
    }


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); tell whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int | None:
    """Return ``VmHWM`` (peak RSS since the last reset) from ``/proc/self/status``, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _full_scan_seconds(url: str) -> float:
    """Time one sequential scan-and-sum of the live ledger: the run's baseline.

    Every job reads much of the ledger, so "how many full scans of it" is a
    ratio that travels between machines better than seconds do.
    """
    from sqlalchemy import text

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            started = time.perf_counter()
            connection.execute(
                text(
                    "SELECT count(*), sum(amount_minor), sum(balance_after_minor) FROM ledger_entries"
                )
            ).one()
            return time.perf_counter() - started
    finally:
        engine.dispose()


def _run_phase_in_child(name: str, days: int, url: str) -> dict[str, Any]:
    env = {**os.environ, "DATABASE_URL": url, "TALLY_LOG_LEVEL": "WARNING"}
    output = subprocess.run(
        [sys.executable, "-m", "bench.maintenance", "--phase", name, "--days", str(days)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    """Seed, then measure each job ``--runs`` times; print the medians as a Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(_phase(args.phase, args.days)))
        return

    with scratch_database("tally-bench-maint-") as url:
        started = time.perf_counter()
        _seed(url, entries=args.entries, wallets=args.wallets, days=args.days)
        print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in PHASES}
        scans: list[float] = []
        for index in range(args.runs):
            _reset(url)
            _full_scan_seconds(url)  # warm the cache as the jobs will find it
            scans.append(_full_scan_seconds(url))
            for name in PHASES:
                figures = _run_phase_in_child(name, args.days, url)
                samples[name].append(figures)
                print(f"run {index + 1}: {json.dumps(figures)}", file=sys.stderr)
        scan_seconds = statistics.median(scans)
        print(f"\n{args.entries} entries, {args.wallets} wallets, {args.days} days, "
              f"median of {args.runs} run(s); baseline: one full scan of the ledger "
              f"= {scan_seconds:.3f} s\n")  # fmt: skip
        print(
            "| job | wall time (s) | full scans | peak RSS (MiB) | RSS before the job (MiB) | result |"
        )
        print("|---|---:|---:|---:|---:|---|")
        for name in PHASES:
            rows = samples[name]
            wall = statistics.median(r["wall_seconds"] for r in rows)
            peak = statistics.median(r["peak_rss_mib"] for r in rows)
            base = statistics.median(r["baseline_rss_mib"] for r in rows)
            print(
                f"| {name} | {wall:.2f} | {wall / scan_seconds:.1f} | {peak:.1f} | {base:.1f} "
                f"| {rows[-1]['result']} |"
            )


if __name__ == "__main__":
    main()
