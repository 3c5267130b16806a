"""What the events outbox costs the apply path: CPU per transaction, with and without events.

``python -m bench.outbox_cost --transactions 20000 --wallets 2000 --runs 3``
starts a private PostgreSQL (durable: fsync on), or uses the scratch database
``DATABASE_URL``, and migrates it. Each run inserts a backlog of pending
transfers between random funded wallets (not measured), then drains the
stream in this process, as a worker's drain does, and measures the drain: the
process's CPU time (user + system), PostgreSQL's CPU time (every server
process of a private server) and the wall time, each per transaction. Three
modes, interleaved run by run so that drift touches them alike:

- ``off``: the event statement replaced by nothing (the apply path before events);
- ``events``: events appended, no webhook endpoint;
- ``events+endpoint``: events and one delivery each, for one enabled endpoint.

Medians are printed as one line of JSON, last; docs/webhooks.md keeps the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.stack import cpu_seconds
from cli.devservers import EmbeddedPostgres, free_port

MODES = ("off", "events", "events+endpoint")


def _server_cpu_seconds(data_dir: Path | None) -> float:
    """Return the CPU seconds of the private server's processes so far (0 without one)."""
    if data_dir is None:
        return 0.0
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    parent = psutil.Process(pid)
    total = 0.0
    for proc in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(proc)
    return total


def _seed(wallets: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Create an API key and ``wallets`` SGD wallets with a large balance; return their ids."""
    from sqlalchemy import text

    from shared import db
    from shared.services.api_keys import Role, create_api_key
    from shared.services.wallets import create_wallet

    with db.transaction() as session:
        key, _ = create_api_key(session, role=Role.SERVICE, name="bench outbox")
        ids = [
            create_wallet(session, owner_ref=f"bench-outbox-{uuid.uuid4()}", currency="SGD").id
            for _ in range(wallets)
        ]
        # Funds without entries: this benchmark measures applies, not reconciliation.
        session.execute(
            text("UPDATE wallets SET balance_minor = 1000000000 WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
    return key.id, ids


def _backlog(api_key_id: uuid.UUID, wallets: list[uuid.UUID], count: int) -> None:
    """Insert ``count`` pending transfers of 0.01 SGD between random wallets."""
    from sqlalchemy import insert

    from shared import db
    from shared.models import Transaction

    rows = []
    for _ in range(count):
        source, destination = random.sample(wallets, 2)
        rows.append(
            {
                "id": uuid.uuid4(), "type": "transfer", "amount_minor": 1, "currency": "SGD",
                "source_wallet_id": source, "destination_wallet_id": destination,
                "lane_wallet_id": source,
                "api_key_id": api_key_id, "idempotency_key": str(uuid.uuid4()),
                "request_hash": "bench",
            }
        )  # fmt: skip
    with db.transaction() as session:
        session.execute(insert(Transaction), rows)


def _drain_all() -> int:
    """Drain the stream until nothing is pending; return the transactions settled."""
    from shared import db
    from shared.config import get_settings
    from shared.services.processor import drain

    settings = get_settings()
    report = drain(batch_size=settings.batch_size, attempts_max=settings.apply_attempts_max)
    db.wait_for_after_commit()
    return report.settled


def _set_mode(mode: str, endpoint_id: uuid.UUID) -> None:
    """Turn events off or on, and the benchmark's endpoint on or off."""
    from sqlalchemy import text

    from shared import db
    from shared.services import apply, events

    apply.record_transaction_events = (  # type: ignore[assignment]
        (lambda session, statuses, **_: None) if mode == "off" else events.record_transaction_events
    )
    with db.transaction() as session:
        session.execute(
            text("UPDATE webhook_endpoints SET status = :status WHERE id = :id"),
            {"status": "enabled" if mode == "events+endpoint" else "disabled", "id": endpoint_id},
        )


def measure(transactions: int, wallets: int, runs: int, data_dir: Path | None) -> dict[str, Any]:
    """Run the modes ``runs`` times each; return every figure and their medians."""
    from shared import db
    from shared.services.webhook_endpoints import create_endpoint

    api_key_id, wallet_ids = _seed(wallets)
    with db.transaction() as session:
        endpoint, _ = create_endpoint(
            session, url="http://127.0.0.1:9/bench", event_types=None, description="bench",
            allow_private_networks=True,
        )  # fmt: skip
    _backlog(api_key_id, wallet_ids, 2000)
    _drain_all()  # warm up: imports, caches, the pool
    figures: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(runs):
        for mode in MODES:
            _set_mode(mode, endpoint.id)
            _backlog(api_key_id, wallet_ids, transactions)
            server_before = _server_cpu_seconds(data_dir)
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            settled = _drain_all()
            cpu = time.process_time() - cpu_before
            wall = time.perf_counter() - wall_before
            server = _server_cpu_seconds(data_dir) - server_before
            figures[mode].append(
                {
                    "worker_cpu_us_per_transaction": cpu / settled * 1e6,
                    "server_cpu_us_per_transaction": server / settled * 1e6,
                    "wall_us_per_transaction": wall / settled * 1e6,
                    "settled": settled,
                }
            )
    medians = {
        mode: {
            name: statistics.median(run[name] for run in figures[mode]) for name in figures[mode][0]
        }
        for mode in MODES
    }
    return {"runs": figures, "median": medians}


def main() -> None:
    """Parse options, start or adopt the database, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--wallets", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tally-outbox-bench-"))
    os.environ.setdefault("TALLY_DATA_DIR", str(root / "data"))
    os.environ.setdefault("TALLY_LOG_LEVEL", "WARNING")
    postgres = None
    data_dir = None
    if "DATABASE_URL" not in os.environ:
        postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=True)
        postgres.start()
        os.environ["DATABASE_URL"] = postgres.create_database("tally_bench")
        data_dir = root / "postgres"
    try:
        from shared.migrations import migrate_database

        migrate_database()
        # One line, last: migrations may print before it.
        print(json.dumps(measure(args.transactions, args.wallets, args.runs, data_dir)))
    finally:
        from shared.db import reset_engine

        reset_engine()
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
