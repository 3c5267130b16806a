"""The bank test: clients keep paying, holding and splitting payments while workers die,
PostgreSQL restarts and messages vanish.

Clients retry a 503 with the same Idempotency-Key, as a careful client does.
Afterwards every accepted transaction is terminal and applied exactly once,
money is conserved, and the ledger agrees with every stored balance.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest

from shared import db
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    submit,
    transfer_body,
    wait_terminal,
)
from tests.pipeline.test_faults import assert_applied_once
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline


def submit_until_accepted(
    client: Any, headers: dict[str, str], body: dict[str, Any] | None, path: str = ""
) -> str | None:
    """Submit (or POST to ``path``), retrying 503s with the same key; return the transaction id.

    Returns None for a capture or void the API refused with 409 ``hold_not_open``.
    """
    key = str(uuid.uuid4())
    deadline = time.monotonic() + 60
    while True:
        if path:
            response = client.post(path, json=body, headers={**headers, "Idempotency-Key": key})
        else:
            response = submit(client, headers, body, key)
        if response.status_code in (200, 202):
            return str(response.get_json()["id"])
        if response.status_code == 409 and response.get_json()["code"] == "hold_not_open":
            return None
        assert response.status_code == 503, response.get_json()
        assert time.monotonic() < deadline, "intake stayed unavailable for 60 s"
        time.sleep(0.2)


def random_payment(rng: random.Random, wallets: list[Any]) -> dict[str, Any]:
    """Return a random body: mostly transfers, then withdrawals, three-wallet groups and holds."""
    amount = f"{rng.randint(1, 4000) / 100:.2f}"
    roll = rng.random()
    if roll < 0.55:
        source, destination = rng.sample(wallets, 2)
        return transfer_body(source, destination, amount)
    if roll < 0.65:
        return {"type": "withdrawal", "amount": amount, "currency": "SGD",
                "source_wallet_id": str(rng.choice(wallets))}  # fmt: skip
    if roll < 0.8:
        x, y, z = rng.sample(wallets, 3)
        return {"type": "group", "legs": [
            {"source_wallet_id": str(src), "destination_wallet_id": str(dst), "amount": amount,
             "currency": "SGD"} for src, dst in ((x, y), (y, z))]}  # fmt: skip
    return {"type": "hold", "amount": amount, "currency": "SGD",
            "source_wallet_id": str(rng.choice(wallets)), "expires_in": rng.randint(1, 3)}  # fmt: skip


def test_bank_under_random_faults(
    app: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    postgres_server: Any,
    redis_client: Any,
    beat: Any,
) -> None:
    rng = random.Random(20261123)
    wallets = [wallet_factory() for _ in range(8)]
    client = app.test_client()
    ids = [submit_until_accepted(client, service_headers, deposit_body(w)) for w in wallets]
    workers = [CeleryProcess("worker", "bank-0").start()]
    stop = threading.Event()
    lock = threading.Lock()

    def customer(seed: int) -> None:
        local_rng, local = random.Random(seed), app.test_client()
        while not stop.is_set():
            body = random_payment(local_rng, wallets)
            accepted = [submit_until_accepted(local, service_headers, body)]
            if body["type"] == "hold" and local_rng.random() < 0.7:  # the rest expire
                verb = local_rng.choice(["capture", "void"])
                capture = {"amount": "0.01"} if verb == "capture" else None
                accepted.append(submit_until_accepted(
                    local, service_headers, capture, f"/v1/transactions/{accepted[0]}/{verb}"
                ))  # fmt: skip
            with lock:
                ids.extend(t for t in accepted if t is not None)

    customers = [threading.Thread(target=customer, args=(seed,)) for seed in range(4)]
    for thread in customers:
        thread.start()
    try:
        for round_ in range(6):  # the chaos
            time.sleep(rng.uniform(0.8, 1.6))
            fault = ("kill_worker", "restart_postgres", "drop_messages")[round_ % 3]
            if fault == "kill_worker":
                workers[-1].kill()
                workers.append(CeleryProcess("worker", f"bank-{len(workers)}").start())
            elif fault == "restart_postgres":
                postgres_server.stop(mode="fast")
                time.sleep(rng.uniform(0.3, 1.0))
                postgres_server.start()
            else:
                redis_client.delete("tally")
    finally:
        stop.set()
        for thread in customers:
            thread.join(90)
        if postgres_server.is_running() is False:
            postgres_server.start()
    try:
        assert len(ids) > 50
        db.reset_engine()
        wait_terminal(ids, timeout_seconds=180, context=workers[-1].log())
        assert_applied_once(ids)
        assert_ledger_consistent()
    finally:
        for process in workers:
            process.stop()
