"""Holds and groups through HTTP, Redis and a real worker, under concurrency."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import pytest

from tests.helpers import ClientThreads, balance_minor, deposit_body, transfer_body, wait_terminal
from tests.oracles import Book, assert_explained

pytestmark = pytest.mark.pipeline


def test_ten_concurrent_captures_and_voids_resolve_a_hold_once(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    client = app.test_client()
    a, b = wallet_factory(), wallet_factory()
    book = Book([a, b])
    wait_terminal(
        [book.submit(client, service_headers, deposit_body(a, "100.00")).get_json()["id"]]
    )
    hold = {"type": "hold", "amount": "40.00", "currency": "SGD", "source_wallet_id": str(a)}
    hold_id = book.submit(client, service_headers, hold).get_json()["id"]
    wait_terminal([hold_id], context=worker.log(), until={"held"})
    answers: list[int] = []
    barrier = threading.Barrier(10)

    def operate(index: int) -> None:
        local = app.test_client()
        verb = "capture" if index % 2 == 0 else "void"
        body = {"amount": "25.00", "destination_wallet_id": str(b)} if verb == "capture" else None
        path = f"/v1/transactions/{hold_id}/{verb}"
        barrier.wait(60)
        sent_at = time.monotonic()
        response = local.post(
            path, json=body, headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())}
        )
        answers.append(response.status_code)
        assert response.status_code in (202, 409), response.get_json()
        if response.status_code == 202:
            book.record(response.get_json()["id"], body, sent_at=sent_at, path=path)

    operators = ClientThreads()
    for index in range(10):
        operators.start(operate, index)
    operators.join(timeout_seconds=60)
    accepted = [t for t in book.ids if t != hold_id and book.accepted[t].type != "deposit"]
    result = wait_terminal([hold_id, *accepted], context=worker.log())
    winners = [t for t in accepted if result[t]["status"] == "completed"]
    assert len(winners) == 1
    assert {result[t]["failure_code"] for t in accepted if t not in winners} <= {"hold_not_open"}
    final = result[hold_id]["status"]
    assert final in ("completed", "voided")
    assert balance_minor(a) == (7_500 if final == "completed" else 10_000)
    assert balance_minor(b) == (2_500 if final == "completed" else 0)
    assert_explained(book, allowed_failures={"hold_not_open"}, context=worker.log())


def test_groups_racing_transfers_keep_every_invariant_without_retries_exhausted(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    book = Book(wallet_factory() for _ in range(6))
    wallets = book.wallets
    client = app.test_client()
    for wallet in wallets:
        assert (
            book.submit(client, service_headers, deposit_body(wallet, "50.00")).status_code == 202
        )

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
            response = book.submit(local, service_headers, body)
            assert response.status_code == 202, response.get_json()

    customers = ClientThreads()
    for seed in range(4):
        customers.start(customer, seed)
    customers.join(timeout_seconds=120)
    result = wait_terminal(book.ids, timeout_seconds=120, context=worker.log())
    assert {r["status"] for r in result.values()} <= {"completed", "failed"}
    assert_explained(book, allowed_failures={"insufficient_funds"}, context=worker.log())
