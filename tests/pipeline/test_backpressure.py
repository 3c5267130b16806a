"""Backpressure at intake with a real Celery worker moving the stream (``shared.services.backpressure``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from shared.wakeups import read_applied_sequence
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    submit,
    transaction_rows,
    wait_for,
    wait_terminal,
)

pytestmark = pytest.mark.pipeline

BOUND = 100


def test_the_worker_stores_its_progress_and_batches_start_within_the_bound(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: Any,
    backpressure_bound: Callable[..., Any],
) -> None:
    wallet = wallet_factory()
    seed = submit(client, service_headers, deposit_body(wallet, "1.00")).get_json()["id"]
    wait_terminal([seed])
    seed_sequence = transaction_rows([seed])[seed]["lane_sequence"]
    wait_for(  # stored after the commit: read before that, the progress would be unknown
        lambda: (read_applied_sequence() or 0) >= seed_sequence,
        timeout_seconds=30,
        what="the worker's stored progress",
    )
    backpressure_bound(backlog_max=BOUND, stall_seconds=60)
    earlier: list[str] = []
    for _ in range(8):
        items = [
            {**deposit_body(wallet, "1.00"), "idempotency_key": str(uuid.uuid4())}
            for _ in range(100)
        ]
        answer = client.post(
            "/v1/transactions/batch", json={"transactions": items}, headers=service_headers
        )
        assert answer.status_code == 200
        # This batch started with at most BOUND of the earlier ones still pending,
        # and the stream only moves forward since.
        pending = [row for row in transaction_rows(earlier).values() if row["status"] == "pending"]
        assert len(pending) <= BOUND
        earlier += [item["transaction"]["id"] for item in answer.get_json()["data"]]
    settled = wait_terminal(earlier)
    assert {row["status"] for row in settled.values()} == {"completed"}
    newest = max(row["lane_sequence"] for row in transaction_rows(earlier).values())
    wait_for(  # the worker stores how far it got right after each commit
        lambda: (read_applied_sequence() or 0) >= newest,
        timeout_seconds=30,
        what="the worker's stored progress",
    )
    assert_ledger_consistent()
