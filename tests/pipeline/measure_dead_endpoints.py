"""Measure what dead webhook endpoints cost the ledger: a bank run beside failing receivers.

``python -m tests.pipeline.measure_dead_endpoints [--dead 30] [--seconds 20]``
starts a stack with ``tally up`` (its own embedded PostgreSQL and Redis, the
default webhook settings, webhooks in their own worker), registers ``--dead``
endpoints on loopback ports nothing listens on (every attempt is refused) and
one live receiver, then ``--clients`` threads submit transfers between
``--wallets`` funded wallets for ``--seconds``. It prints, after the load:

- how long until every transaction submitted is terminal;
- how long until the live receiver has heard every event of the run, and the
  lag of each event (receipt minus the event's ``created_at``), p50/p99/max;
- the attempts made to the dead endpoints, and the webhook worker's CPU time.

Not collected by pytest: it measures, it does not assert (docs/webhooks.md,
"Failing endpoints").
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import requests
import sqlalchemy as sa

from bench.funding import create_funded_wallets
from bench.stack import cpu_seconds_by_component, started_stack
from cli.devservers import free_port

#: The live receiver, run in a process of its own so the load's client threads do not
#: slow its answers: one line "<webhook-id> <unix time>" per first receipt, on stdout.
_RECEIVER = """
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
seen, lock = set(), threading.Lock()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        at, hook = time.time(), self.headers["webhook-id"]
        self.send_response(204)
        self.end_headers()
        with lock:
            if hook not in seen:
                seen.add(hook)
                print(hook, at, flush=True)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class LiveReceiver:
    """A receiver process on loopback that answers 204 and notes when each webhook-id came."""

    def __init__(self) -> None:
        self.heard: dict[str, float] = {}
        self._process = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self._process.stdout.readline())}/hooks"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            hook, at = line.split()
            self.heard[hook] = float(at)

    def stop(self) -> None:
        """Stop the receiver process."""
        self._process.terminate()
        self._process.wait(10)


def _load(url: str, key: str, wallets: list[str], *, clients: int, seconds: float) -> list[str]:
    """Submit transfers from ``clients`` threads for ``seconds``; return the accepted ids."""
    ids: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while time.monotonic() < deadline:
            source, destination = rng.sample(wallets, 2)
            body = {"type": "transfer", "amount": f"{rng.randint(1, 500) / 100:.2f}",
                    "currency": "SGD", "source_wallet_id": source,
                    "destination_wallet_id": destination}  # fmt: skip
            answer = session.post(
                f"{url}/v1/transactions", json=body,
                headers={"Idempotency-Key": f"{seed}-{rng.random()}"}, timeout=30,
            )  # fmt: skip
            if answer.status_code == 202:
                with lock:
                    ids.append(answer.json()["id"])

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(*, dead: int, wallets: int, clients: int, seconds: float) -> dict[str, Any]:
    """Run the scenario once on a stack of its own; return the figures."""
    receiver = LiveReceiver()
    with started_stack(web_workers=None, web_threads=None, worker_concurrency=None) as stack:
        engine = sa.create_engine(stack.database_url)
        ops = {"Authorization": f"Bearer {stack.ops_key}"}
        for url in [f"http://127.0.0.1:{free_port()}/dead" for _ in range(dead)] + [receiver.url]:
            answer = requests.post(f"{stack.url}/v1/webhook-endpoints", json={"url": url},
                                   headers=ops, timeout=30)  # fmt: skip
            answer.raise_for_status()
        wallet_ids, _ = create_funded_wallets(
            stack.url, stack.service_key, workload="uniform", count=wallets
        )
        with engine.connect() as connection:  # the funding settles before the clock starts
            while connection.execute(
                sa.text("SELECT count(*) FROM transactions WHERE status = 'pending'")
            ).scalar_one():
                connection.commit()
                time.sleep(0.1)
        assert stack.root is not None
        cpu_before = cpu_seconds_by_component(stack.root)
        started = time.monotonic()
        ids = _load(stack.url, stack.service_key, wallet_ids, clients=clients, seconds=seconds)
        load_seconds = time.monotonic() - started
        ended = time.time()
        settle_seconds = None
        with engine.connect() as connection:
            while time.time() - ended < 300:
                pending = connection.execute(
                    sa.text("SELECT count(*) FROM transactions "
                            "WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'pending'"),
                    {"ids": ids},
                ).scalar_one()  # fmt: skip
                connection.commit()
                if pending == 0:
                    settle_seconds = time.time() - ended
                    break
                time.sleep(0.1)
            events = {
                f"evt_{row.id.hex}": row.created_at.timestamp()
                for row in connection.execute(
                    sa.text(
                        "SELECT id, created_at FROM events "
                        "WHERE transaction_id = ANY(CAST(:ids AS uuid[]))"
                    ),
                    {"ids": ids},
                )  # fmt: skip
            }
            heard_seconds = None
            while time.time() - ended < 300:
                if events.keys() <= set(receiver.heard):
                    heard_seconds = time.time() - ended
                    break
                time.sleep(0.1)
            dead_attempts = connection.execute(
                sa.text("SELECT coalesce(sum(d.attempts), 0) FROM webhook_deliveries d "
                        "JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE w.url <> :live"),
                {"live": receiver.url},
            ).scalar_one()  # fmt: skip
        cpu_after = cpu_seconds_by_component(stack.root)
        lags = [receiver.heard[e] - at for e, at in events.items() if e in receiver.heard]
        engine.dispose()
    receiver.stop()
    return {
        "dead_endpoints": dead,
        "transactions": len(ids),
        "transactions_per_second": round(len(ids) / load_seconds, 1),
        "terminal_after_load_seconds": None if settle_seconds is None else round(settle_seconds, 2),
        "live_heard_all_after_load_seconds": None
        if heard_seconds is None
        else round(heard_seconds, 2),
        "events": len(events),
        "live_lag_seconds_p50": round(_percentile(lags, 0.5), 3) if lags else None,
        "live_lag_seconds_p99": round(_percentile(lags, 0.99), 3) if lags else None,
        "live_lag_seconds_max": round(max(lags), 3) if lags else None,
        "dead_attempts": int(dead_attempts),
        "cpu_seconds": {
            name: round(cpu_after.get(name, 0) - cpu_before.get(name, 0), 1) for name in cpu_after
        },
        "live_lag_seconds_mean": round(statistics.fmean(lags), 3) if lags else None,
    }


def main() -> None:
    """Parse the options, run the scenario and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dead", type=int, default=30)
    parser.add_argument("--wallets", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    options = parser.parse_args()
    figures = measure(
        dead=options.dead, wallets=options.wallets, clients=options.clients,
        seconds=options.seconds,
    )  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
