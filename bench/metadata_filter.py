"""Finding transactions by metadata among many: ``GET /v1/transactions?metadata[KEY]=VALUE``.

``tally bench metadata [--transactions 1000000] [--runs 21]`` seeds that many
transactions in one ``INSERT ... SELECT FROM generate_series`` into a private
PostgreSQL it starts (durable: fsync on) and stops, or into the scratch
database ``DATABASE_URL`` (refused if it holds wallets other than the
benchmark's). Every transaction carries ``{"batch": "b-<n>", "source": ...}``
with ``--per-batch`` transactions (5) per batch value, all of one source, so a
filter on one batch and its source matches a handful. They are ``failed`` transactions, which have no ledger
entries, so the seeded database keeps every invariant.

Then, ``--runs`` times, each time for another batch value, it times the API's
answer to ``GET /v1/transactions?metadata[batch]=b-<n>&metadata[source]=...``
(Flask's test client in this process: routing, authentication, validation,
the query and the rendering; no socket), and prints the median and range, the
``EXPLAIN (ANALYZE, BUFFERS)`` plan of the query, and, as the baseline, the
same query with index scans turned off (a sequential scan of the table).
Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.scratch import scratch_database
from shared.models import HAS_METADATA

#: The metadata ``source`` values, one per batch in turn.
SOURCES = ("bank_transfer", "card", "paynow", "cash")


def _seed(url: str, *, transactions: int, per_batch: int) -> None:
    """Insert ``transactions`` failed deposits with metadata, unless already seeded."""
    from sqlalchemy import create_engine, text

    with create_engine(url).begin() as connection:
        run = connection.execute
        foreign = run(
            text("SELECT count(*) FROM wallets WHERE NOT is_system AND owner_ref <> 'bench-meta'")
        ).scalar_one()
        if foreign:
            raise SystemExit("DATABASE_URL holds wallets not made by this benchmark: refusing")
        if run(text("SELECT count(*) FROM wallets WHERE owner_ref = 'bench-meta'")).scalar_one():
            print("database already seeded; reusing it", file=sys.stderr)
            return
        run(text("SET LOCAL maintenance_work_mem = '256MB'"))
        run(
            text(
                "INSERT INTO api_keys (id, name, role, key_hash) "
                "VALUES (gen_random_uuid(), 'bench-meta', 'service', md5(random()::text))"
            )
        )
        run(
            text(
                "INSERT INTO wallets (id, owner_ref, currency) "
                "VALUES (gen_random_uuid(), 'bench-meta', 'SGD')"
            )
        )
        run(
            text(
                """
                INSERT INTO transactions (id, type, status, amount_minor, currency,
                    destination_wallet_id, lane_wallet_id, metadata, failure_code,
                    api_key_id, idempotency_key, request_hash, created_at, updated_at,
                    completed_at)
                SELECT gen_random_uuid(), 'deposit', 'failed', 100, 'SGD', w.id, w.id,
                       jsonb_build_object('batch', 'b-' || (i / :per_batch),
                                          'source',
                                          (CAST(:sources AS text[]))[1 + (i / :per_batch) % 4]),
                       'wallet_frozen', k.id, 'bench-meta-' || i, 'bench',
                       at, at, at
                FROM generate_series(0, :n - 1) i,
                     LATERAL (SELECT now() - make_interval(secs => :n - i) AS at) t,
                     (SELECT id FROM wallets WHERE owner_ref = 'bench-meta') w,
                     (SELECT id FROM api_keys WHERE name = 'bench-meta') k
                """
            ),
            {"n": transactions, "per_batch": per_batch, "sources": list(SOURCES)},
        )
    with create_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE transactions"))


def _query(batch: int, per_batch: int) -> tuple[str, dict[str, str]]:
    """Return the filter's query string and the metadata it asks for."""
    source = SOURCES[batch % len(SOURCES)]  # every transaction of the batch has it
    return (
        f"metadata[batch]=b-{batch}&metadata[source]={source}",
        {"batch": f"b-{batch}", "source": source},
    )


#: The statement the API runs for the filter (``shared.services.transactions``), as EXPLAIN sees it.
_SQL = (
    f"SELECT * FROM transactions WHERE metadata @> CAST(:pairs AS jsonb) AND {HAS_METADATA.text} "
    "ORDER BY created_at DESC, id DESC LIMIT 51"
)


def _plan(url: str, pairs: dict[str, str], *, scan: bool) -> tuple[str, float]:
    """Return the query's ``EXPLAIN (ANALYZE, BUFFERS)`` text and its execution time in ms.

    Args:
        scan: turn index and bitmap scans off, so PostgreSQL scans the table.
    """
    import json

    from sqlalchemy import create_engine, text

    with create_engine(url).begin() as connection:
        if scan:
            connection.execute(text("SET LOCAL enable_indexscan = off"))
            connection.execute(text("SET LOCAL enable_bitmapscan = off"))
        lines = connection.execute(
            text(f"EXPLAIN (ANALYZE, BUFFERS) {_SQL}"), {"pairs": json.dumps(pairs)}
        ).scalars()
        plan = "\n".join(lines)
    executed = [line for line in plan.splitlines() if line.startswith("Execution Time")]
    return plan, float(executed[0].split()[2])


def _time_api(
    runs: int, transactions: int, per_batch: int, *, filtered: bool = True
) -> list[tuple[float, int]]:
    """Time ``runs`` filters over the API in this process; return (ms, matches) for each.

    Args:
        filtered: False: time ``?limit=5`` without a filter instead (the API's own cost).
    """
    from api import create_app
    from shared import db
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        _, secret = create_api_key(session, role=Role.SERVICE, name="bench-meta-reader")
    client = create_app({"TESTING": True}).test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    batches = transactions // per_batch
    client.get("/v1/transactions?limit=1", headers=headers)  # connect, warm the app
    samples = []
    for index in range(runs):
        query, _ = _query((index * 7919 + 13) % batches, per_batch)
        if not filtered:
            query = "limit=5"
        started = time.perf_counter()
        response = client.get(f"/v1/transactions?{query}", headers=headers)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {response.get_data(as_text=True)}")
        samples.append((elapsed_ms, len(response.get_json()["data"])))
    return samples


def main(argv: list[str] | None = None) -> None:
    """Seed, time the filter ``--runs`` times over the API, print figures and plans."""
    parser = argparse.ArgumentParser(prog="tally bench metadata")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--per-batch", type=int, default=5)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args(argv)

    os.environ.setdefault("TALLY_RATE_LIMIT_ENABLED", "false")  # no Redis needed
    os.environ.setdefault("TALLY_LOG_LEVEL", "WARNING")
    with scratch_database("tally-bench-meta-") as url:
        started = time.perf_counter()
        _seed(url, transactions=args.transactions, per_batch=args.per_batch)
        print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        samples = _time_api(args.runs, args.transactions, args.per_batch)
        times = [ms for ms, _ in samples]
        plain = [ms for ms, _ in _time_api(args.runs, args.transactions, 1, filtered=False)]
        _, pairs = _query(13, args.per_batch)
        plan, index_ms = _plan(url, pairs, scan=False)
        _, scan_ms = _plan(url, pairs, scan=True)
        print(
            f"\n{args.transactions} transactions, {args.per_batch} per batch value; "
            f"GET /v1/transactions?metadata[batch]=...&metadata[source]=..., {args.runs} runs, "
            f"each another batch\n"
        )
        print("| measure | median (ms) | min - max (ms) | matches |")
        print("|---|---:|---:|---:|")
        print(
            f"| API answer, in process | {statistics.median(times):.2f} | "
            f"{min(times):.2f} - {max(times):.2f} | {samples[0][1]} |"
        )
        print(
            f"| API answer, no filter, limit=5 (baseline) | {statistics.median(plain):.2f} | "
            f"{min(plain):.2f} - {max(plain):.2f} | 5 |"
        )
        print(f"| the query alone, GIN index (EXPLAIN ANALYZE) | {index_ms:.2f} | | |")
        print(f"| the query alone, sequential scan (baseline) | {scan_ms:.2f} | | |")
        print(f"\nEXPLAIN (ANALYZE, BUFFERS) {_SQL}  -- {pairs}\n\n{plan}")


if __name__ == "__main__":
    main()
