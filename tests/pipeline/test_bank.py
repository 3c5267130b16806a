"""The bank test: clients keep paying, holding, splitting and reversing payments while
workers die, PostgreSQL restarts and messages vanish. Half the wallets may go
into an overdraft, up to a limit ops set (and lower, once, under the load).

Clients retry a 503 with the same Idempotency-Key, as a careful client does;
any other answer, or an exception in a client's thread, fails the test.
Afterwards every accepted transaction is terminal and applied exactly once,
none failed for a reason other than the ones the clients provoke, every
balance is what the clients' record of their requests adds up to, no
transaction on the wallets is one no client submitted, each wallet's entries
are in acceptance order, money is conserved, and the ledger agrees with every
stored balance (``tests/oracles.py``).
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
    ClientThreads,
    deposit_body,
    statuses,
    submit,
    transfer_body,
    wait_terminal,
)
from tests.oracles import Book, assert_explained
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

#: What the clients provoke: spending more than a wallet has, ending a hold that ended,
#: reversing more than is left of a payment.
PROVOKED = {"insufficient_funds", "hold_not_open", "reversal_exceeds_amount"}

#: What the API may refuse of a capture, void or reversal: the state it needs is gone
#: (or not there yet: a reversal of a payment still pending).
REFUSED = {(409, "hold_not_open"), (409, "not_reversible"), (422, "reversal_exceeds_amount")}


def submit_until_accepted(
    client: Any, headers: dict[str, str], body: dict[str, Any] | None, book: Book, path: str = ""
) -> str | None:
    """Submit (or POST to ``path``), retrying 503s with the same key; return the transaction id.

    Records the accepted request in ``book``. Returns None for a capture, void
    or reversal the API refused (``REFUSED``).
    """
    key = str(uuid.uuid4())
    sent_at = time.monotonic()
    deadline = sent_at + 60
    while True:
        if path:
            response = client.post(path, json=body, headers={**headers, "Idempotency-Key": key})
        else:
            assert body is not None
            response = submit(client, headers, body, key)
        if response.status_code in (200, 202):
            return book.record(response.get_json()["id"], body, sent_at=sent_at, path=path)
        if (response.status_code, response.get_json().get("code")) in REFUSED:
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


#: The overdraft limit of the first half of the wallets, then the one ops lower it to.
OVERDRAFT_LIMITS = ("30.00", "10.00")


def set_overdraft_limit(client: Any, headers: dict[str, str], wallet: Any, limit: str) -> bool:
    """PATCH a wallet's overdraft limit, retrying 503s; return False if it is in use (409).

    Raises:
        AssertionError: any other answer, or 503s for 60 s.
    """
    deadline = time.monotonic() + 60
    while True:
        response = client.patch(
            f"/v1/wallets/{wallet}", json={"overdraft_limit": limit}, headers=headers
        )
        if response.status_code == 200:
            return True
        if (response.status_code, response.get_json().get("code")) == (409, "overdraft_in_use"):
            return False
        assert response.status_code == 503, response.get_json()
        assert time.monotonic() < deadline, "the API stayed unavailable for 60 s"
        time.sleep(0.2)


def test_bank_under_random_faults(
    app: Any,
    service_headers: dict[str, str],
    ops_headers: dict[str, str],
    wallet_factory: Any,
    postgres_server: Any,
    redis_client: Any,
    beat: Any,
) -> None:
    rng = random.Random(20261123)
    book = Book(wallet_factory() for _ in range(8))
    wallets = book.wallets
    client = app.test_client()
    for wallet in wallets:
        submit_until_accepted(client, service_headers, deposit_body(wallet), book)
    overdrawn = wallets[: len(wallets) // 2]
    overdrafts = []
    for wallet in overdrawn:
        assert set_overdraft_limit(client, ops_headers, wallet, OVERDRAFT_LIMITS[0])
        # Applied after its deposit (acceptance order): 5.00 below zero, whatever follows.
        spend = {"type": "withdrawal", "amount": "105.00", "currency": "SGD",
                 "source_wallet_id": str(wallet)}  # fmt: skip
        overdrafts.append(submit_until_accepted(client, service_headers, spend, book))
    workers = [CeleryProcess("worker", "bank-0").start()]
    stop = threading.Event()

    def customer(seed: int) -> None:
        local_rng, local = random.Random(seed), app.test_client()
        payments: list[str] = []  # this customer's accepted transfers and withdrawals
        while not stop.is_set():
            body = random_payment(local_rng, wallets)
            hold = submit_until_accepted(local, service_headers, body, book)
            if body["type"] in ("transfer", "withdrawal") and hold is not None:
                payments.append(hold)
            if payments and local_rng.random() < 0.15:  # part of an earlier payment back
                reversal = {"amount": f"{local_rng.randint(1, 500) / 100:.2f}"}
                path = f"/v1/transactions/{local_rng.choice(payments)}/reverse"
                submit_until_accepted(local, service_headers, reversal, book, path)
            if body["type"] == "hold" and local_rng.random() < 0.7:  # the rest expire
                verb = local_rng.choice(["capture", "void"])
                capture = {"amount": "0.01"} if verb == "capture" else None
                submit_until_accepted(
                    local, service_headers, capture, book, f"/v1/transactions/{hold}/{verb}"
                )

    customers = ClientThreads()
    for seed in range(4):
        customers.start(customer, seed)
    try:
        for round_ in range(6):  # the chaos
            time.sleep(rng.uniform(0.8, 1.6))
            if round_ == 3:  # ops lower the limits while the debits apply: some are in use
                for wallet in overdrawn:
                    set_overdraft_limit(client, ops_headers, wallet, OVERDRAFT_LIMITS[1])
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
        if postgres_server.is_running() is False:
            postgres_server.start()
    try:
        customers.join(timeout_seconds=90)
        ids = book.ids
        assert len(ids) > 50
        kinds = {request.type for request in book.accepted.values()}
        assert {"reversal", "capture", "group"} <= kinds, kinds  # the workload has them all
        db.reset_engine()
        wait_terminal(ids, timeout_seconds=180, context=workers[-1].log())
        assert_explained(book, allowed_failures=PROVOKED, context=workers[-1].log())
        # Each overdrawing wallet went below zero, within its limit (the oracles bound it).
        assert {s["status"] for s in statuses(overdrafts).values()} == {"completed"}
    finally:
        for process in workers:
            process.stop()
