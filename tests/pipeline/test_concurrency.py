"""Concurrency: many clients, many wallets, one real worker pool; invariants 1, 2, 3 and 5 hold."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from tests.helpers import assert_ledger_consistent, submit, wait_terminal

pytestmark = pytest.mark.pipeline


def test_random_transfers_from_eight_threads_keep_the_ledger_consistent(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    wallets = [str(wallet_factory()) for _ in range(10)]
    client = app.test_client()
    seeded = [
        submit(client, service_headers, {"type": "deposit", "amount": "50.00", "currency": "SGD",
                                         "destination_wallet_id": w}).get_json()["id"]
        for w in wallets
    ]  # fmt: skip
    ids: list[str] = list(seeded)
    lock = threading.Lock()

    def client_thread(seed: int) -> None:
        rng, local = random.Random(seed), app.test_client()
        for _ in range(300 // 8 + 1):
            kind = rng.choices(["transfer", "deposit", "withdrawal"], weights=[8, 1, 1])[0]
            amount = f"{rng.randint(1, 3000) / 100:.2f}"
            body: dict[str, Any] = {"type": kind, "amount": amount, "currency": "SGD"}
            source, destination = rng.sample(wallets, 2)
            if kind != "deposit":
                body["source_wallet_id"] = source
            if kind != "withdrawal":
                body["destination_wallet_id"] = destination
            response = submit(local, service_headers, body)
            assert response.status_code == 202, response.get_json()
            with lock:
                ids.append(response.get_json()["id"])

    threads = [threading.Thread(target=client_thread, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(ids) >= 310
    result = wait_terminal(ids, timeout_seconds=180, context=worker.log())
    outcomes = {r["status"] for r in result.values()}
    assert outcomes <= {"completed", "failed"} and "completed" in outcomes
    assert {r["failure_code"] for r in result.values() if r["status"] == "failed"} <= {
        "insufficient_funds"
    }
    assert_ledger_consistent()
