"""Pipeline throughput, measured against pgbench on the same PostgreSQL in the same run.

``tally bench pipeline`` starts private PostgreSQL and Redis servers (durable:
fsync on, as in production), a real Celery worker, and measures, as medians of
``--runs`` runs:

- ``intake``: transfers recorded per second by the API's intake path
  (validation, idempotent insert, publish after commit) from 4 client threads;
- ``end_to_end``: transfers per second from the first submission until every
  one is terminal, with the worker applying while clients submit;
- ``drain``: transfers per second applied from a backlog built while the
  worker was stopped (one queued message per lane), its batch throughput;
- ``pgbench``: TPC-B-like transactions per second of ``pgbench -c 4 -j 2`` on
  the same server: the baseline every figure is divided by.

No figure is asserted anywhere; the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

WALLETS = 200


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _pgbench(postgres: Any, seconds: int) -> float:
    from cli.devservers import _pg_bin

    database = "pgbench"
    postgres.create_database(database)
    common = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres"]
    subprocess.run(
        [str(_pg_bin() / "pgbench"), "-i", "-q", "-s", "10", *common, database],
        check=True,
        capture_output=True,
    )
    output = subprocess.run(
        [str(_pg_bin() / "pgbench"), "-c", "4", "-j", "2", "-T", str(seconds), *common, database],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def _wait_terminal(ids: list[uuid.UUID], timeout_seconds: float = 600) -> float:
    from sqlalchemy import text

    from shared import db

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with db.transaction() as session:
            pending = session.execute(
                text(
                    "SELECT count(*) FROM transactions WHERE id = ANY(:ids) AND status = 'pending'"
                ),
                {"ids": ids},
            ).scalar_one()
        if pending == 0:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError("transactions still pending")


def _fund(wallet_ids: list[uuid.UUID], key_id: uuid.UUID) -> None:
    from shared import db
    from shared.ledger.states import TransactionType
    from shared.services.intake import TransactionRequest, submit_transaction
    from shared.services.processor import drain_lane

    for wallet_id in wallet_ids:
        with db.transaction() as session:
            submit_transaction(
                session,
                TransactionRequest(TransactionType.DEPOSIT, 10**9, "SGD", None, wallet_id),
                api_key_id=key_id,
                idempotency_key=str(uuid.uuid4()),
                publish=lambda _: None,
            )
        drain_lane(wallet_id, batch_size=500, attempts_max=5)


def _submit_transfers(
    app: Any, headers: dict[str, str], wallets: list[str], count: int, threads: int = 4
) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng, local = random.Random(seed), app.test_client()
        for _ in range(count // threads):
            source, destination = rng.sample(wallets, 2)
            response = local.post(
                "/v1/transactions",
                json={"type": "transfer", "amount": "1.00", "currency": "SGD",
                      "source_wallet_id": source, "destination_wallet_id": destination},
                headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            )  # fmt: skip
            assert response.status_code == 202, response.get_json()
            with lock:
                ids.append(uuid.UUID(response.get_json()["id"]))

    workers = [threading.Thread(target=client, args=(seed,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return ids


def run(*, transactions: int, runs: int, pgbench_seconds: int, concurrency: int) -> dict[str, Any]:
    """Run the benchmark on private servers and return medians and ratios (see module doc)."""
    from cli.devservers import EmbeddedPostgres, EmbeddedRedis, free_port

    root = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=True)
    redis_server = EmbeddedRedis(root / "redis", free_port(), durable=False)
    worker: subprocess.Popen[bytes] | None = None
    try:
        postgres.start()
        os.environ["DATABASE_URL"] = postgres.create_database("tally")
        os.environ["REDIS_URL"] = redis_server.start()
        os.environ.setdefault("TALLY_LOG_LEVEL", "WARNING")

        from api import create_app
        from cli.main import migrate_database
        from shared import db
        from shared.services.api_keys import Role, create_api_key
        from shared.services.wallets import create_wallet

        migrate_database()
        with db.transaction() as session:
            key, secret = create_api_key(session, role=Role.SERVICE, name="bench")
            wallet_ids = [
                create_wallet(session, owner_ref=f"bench-{i}", currency="SGD").id
                for i in range(WALLETS)
            ]
        _fund(wallet_ids, key.id)
        wallets = [str(w) for w in wallet_ids]
        app, headers = create_app(), {"Authorization": f"Bearer {secret}"}

        pgbench_tps = [_pgbench(postgres, pgbench_seconds) for _ in range(runs)]

        log = (root / "worker.log").open("wb")
        worker = subprocess.Popen(
            ["celery", "-A", "worker.app", "worker", "-c", str(concurrency), "-Q", "tally",
             "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
        time.sleep(5)

        intake, end_to_end, drain = [], [], []
        for _ in range(runs):
            started = time.monotonic()
            ids = _submit_transfers(app, headers, wallets, transactions)
            submitted = time.monotonic()
            finished = _wait_terminal(ids)
            intake.append(len(ids) / (submitted - started))
            end_to_end.append(len(ids) / (finished - started))

        for _ in range(runs):
            # A backlog: the worker is stopped while clients submit; lane signals
            # leave one queued message per lane, as in production after an outage.
            os.kill(worker.pid, signal.SIGSTOP)
            try:
                ids = _submit_transfers(app, headers, wallets, transactions)
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            started = time.monotonic()
            drain.append(len(ids) / (_wait_terminal(ids) - started))

        baseline = _median(pgbench_tps)
        figures = {
            "pgbench_tps": baseline,
            "intake_per_second": _median(intake),
            "end_to_end_per_second": _median(end_to_end),
            "drain_per_second": _median(drain),
        }
        figures["ratios_to_pgbench"] = {
            name: round(value / baseline, 3)
            for name, value in figures.items()
            if name != "pgbench_tps"
        }
        figures["runs"] = runs
        figures["transactions_per_run"] = transactions
        figures["worker_concurrency"] = concurrency
        return figures
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        from shared.db import reset_engine

        reset_engine()
        redis_server.stop()
        postgres.stop()
