"""Reversals through HTTP, Redis and a real worker, racing each other and the payments they undo."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from tests.helpers import ClientThreads, deposit_body, transfer_body, wait_terminal
from tests.oracles import Book, assert_explained

pytestmark = pytest.mark.pipeline


def test_twenty_concurrent_reversals_complete_at_most_the_original(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    """Twenty reversals of 15.00 of a 100.00 transfer, sent at once while the worker applies.

    Exactly six complete; each of the others is refused at intake (422, once six
    have completed) or fails ``reversal_exceeds_amount`` when applied. Meanwhile
    the destination keeps receiving and spending, so the reversals apply between
    other debits of the wallet they debit.
    """
    client = app.test_client()
    a, b, c = wallet_factory(), wallet_factory(), wallet_factory()
    book = Book([a, b, c])
    deposit = book.submit(client, service_headers, deposit_body(a, "100.00")).get_json()["id"]
    wait_terminal([deposit], context=worker.log())
    original = book.submit(client, service_headers, transfer_body(a, b, "100.00")).get_json()["id"]
    wait_terminal([original], context=worker.log())
    barrier = threading.Barrier(21)
    refused: list[str] = []
    path = f"/v1/transactions/{original}/reverse"

    def reverser() -> None:
        local, body = app.test_client(), {"amount": "15.00"}
        barrier.wait(60)
        sent_at = time.monotonic()
        response = local.post(
            path, json=body, headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())}
        )
        if response.status_code == 422:
            assert response.get_json()["code"] == "reversal_exceeds_amount", response.get_json()
            refused.append(response.get_json()["code"])
            return
        assert response.status_code == 202, response.get_json()
        book.record(response.get_json()["id"], body, sent_at=sent_at, path=path)

    def bystander() -> None:
        """Pays into b and out of it while the reversals race: 10.00 in, 10.00 out, ten times."""
        local = app.test_client()
        barrier.wait(60)
        for _ in range(10):
            book.submit(local, service_headers, transfer_body(c, b, "10.00"))
            book.submit(local, service_headers, transfer_body(b, c, "10.00"))

    book.submit(client, service_headers, deposit_body(c, "10.00"))
    threads = ClientThreads()
    for _ in range(20):
        threads.start(reverser)
    threads.start(bystander)
    threads.join(timeout_seconds=120)
    reversals = [t for t in book.ids if book.accepted[t].type == "reversal"]
    assert len(reversals) + len(refused) == 20
    wait_terminal(book.ids, timeout_seconds=120, context=worker.log())
    final = assert_explained(
        book, allowed_failures={"reversal_exceeds_amount", "insufficient_funds"},
        context=worker.log(),
    )  # fmt: skip
    done = [t for t in reversals if final[t]["status"] == "completed"]
    assert len(done) == 6, worker.log()
    assert {final[t]["failure_code"] for t in reversals if t not in done} <= {
        "reversal_exceeds_amount"
    }
    response = client.get(f"/v1/transactions/{original}", headers=service_headers)
    assert response.get_json()["reversed_amount"] == "90.00"
