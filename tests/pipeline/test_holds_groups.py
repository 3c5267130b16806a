"""Holds and groups through HTTP, Redis and a real worker, under concurrency."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import pytest

from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    submit,
    transfer_body,
    wait_terminal,
)
from tests.pipeline.test_faults import assert_applied_once

pytestmark = pytest.mark.pipeline


def test_ten_concurrent_captures_and_voids_resolve_a_hold_once(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    client = app.test_client()
    a, b = wallet_factory(), wallet_factory()
    wait_terminal([submit(client, service_headers, deposit_body(a, "100.00")).get_json()["id"]])
    hold = {"type": "hold", "amount": "40.00", "currency": "SGD", "source_wallet_id": str(a)}
    hold_id = submit(client, service_headers, hold).get_json()["id"]
    wait_terminal([hold_id], context=worker.log(), until={"held"})
    answers: list[Any] = []
    barrier = threading.Barrier(10)

    def operate(index: int) -> None:
        local = app.test_client()
        verb = "capture" if index % 2 == 0 else "void"
        body = {"amount": "25.00", "destination_wallet_id": str(b)} if verb == "capture" else None
        barrier.wait()
        answers.append(
            local.post(f"/v1/transactions/{hold_id}/{verb}", json=body,
                       headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())})
        )  # fmt: skip

    threads = [threading.Thread(target=operate, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    accepted = [r.get_json()["id"] for r in answers if r.status_code == 202]
    assert all(r.status_code in (202, 409) for r in answers)
    result = wait_terminal([hold_id, *accepted], context=worker.log())
    winners = [t for t in accepted if result[t]["status"] == "completed"]
    assert len(winners) == 1
    assert {result[t]["failure_code"] for t in accepted if t not in winners} <= {"hold_not_open"}
    final = result[hold_id]["status"]
    assert final in ("completed", "voided")
    assert balance_minor(a) == (7_500 if final == "completed" else 10_000)
    assert balance_minor(b) == (2_500 if final == "completed" else 0)
    assert_applied_once([hold_id, *accepted])
    assert_ledger_consistent()


def test_groups_racing_transfers_keep_every_invariant_without_retries_exhausted(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    wallets = [wallet_factory() for _ in range(6)]
    client = app.test_client()
    ids = [
        submit(client, service_headers, deposit_body(w, "50.00")).get_json()["id"] for w in wallets
    ]
    lock = threading.Lock()

    def customer(seed: int) -> None:
        rng, local = random.Random(seed), app.test_client()
        for _ in range(25):
            if rng.random() < 0.4:
                x, y, z = rng.sample(wallets, 3)
                legs = [{"source_wallet_id": str(src), "destination_wallet_id": str(dst),
                         "amount": f"{rng.randint(1, 900) / 100:.2f}", "currency": "SGD"}
                        for src, dst in ((x, y), (y, z), (z, x))]  # fmt: skip
                body: dict[str, Any] = {"type": "group", "legs": legs}
            else:
                source, destination = rng.sample(wallets, 2)
                body = transfer_body(source, destination, f"{rng.randint(1, 900) / 100:.2f}")
            response = submit(local, service_headers, body)
            assert response.status_code == 202, response.get_json()
            with lock:
                ids.append(response.get_json()["id"])

    threads = [threading.Thread(target=customer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    result = wait_terminal(ids, timeout_seconds=120, context=worker.log())
    assert not [t for t in ids if result[t]["failure_code"] == "retries_exhausted"]
    assert {r["status"] for r in result.values()} <= {"completed", "failed"}
    assert_applied_once(ids)
    assert_ledger_consistent()
