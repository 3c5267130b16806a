"""Concurrent ``POST /v1/transactions`` in one process share commits; each keeps its own answer."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from shared import db
from tests.helpers import deposit_body, submit


def test_concurrent_submissions_share_commits_and_keep_their_answers(
    app: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    wallet_id, shared_key = wallet_factory(), f"shared-{uuid.uuid4()}"
    requests: list[tuple[dict[str, Any], str | None]] = [
        (deposit_body(wallet_id, f"{n}.00"), None) for n in range(1, 25)
    ]
    requests += [(deposit_body(wallet_id, "99.00"), shared_key)] * 2  # one key, twice
    requests += [(deposit_body(uuid.uuid4()), None)]  # no such wallet
    barrier = threading.Barrier(len(requests))
    answers: dict[int, Any] = {}

    def one(index: int) -> None:
        body, key = requests[index]
        client = app.test_client()
        barrier.wait()
        answers[index] = submit(client, service_headers, body, key)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == len(requests)
    for index in range(24):
        response = answers[index]
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["amount"] == f"{index + 1}.00"
    pair = sorted((answers[24], answers[25]), key=lambda r: r.status_code)
    assert [r.status_code for r in pair] == [200, 202]
    assert pair[0].headers["Idempotent-Replayed"] == "true"
    assert pair[0].get_json()["id"] == pair[1].get_json()["id"]
    assert answers[26].status_code == 404
    assert answers[26].get_json()["code"] == "wallet_not_found"
    ids = [answers[i].get_json()["id"] for i in range(25)]
    with db.transaction() as session:
        transactions = session.execute(
            text("SELECT xmin::text FROM transactions WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids},
        ).all()
    assert len(transactions) == 25
    # Fewer database transactions than submissions: some committed together.
    assert len({row[0] for row in transactions}) < 25


def test_each_group_signals_the_stream_after_its_commit(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Callable[..., uuid.UUID],
    redis_client: Any,
) -> None:
    # One request at a time: each is a group of its own, recorded on the session the
    # leader keeps between groups; each must still signal the stream once.
    from tests.integration.test_batch_submission import drains_queued, signal_cleared

    wallet_id = wallet_factory()
    for amount in ("1.00", "2.00", "3.00"):
        before = signal_cleared(redis_client)  # so the next signal is not merged
        response = submit(client, service_headers, deposit_body(wallet_id, amount))
        assert response.status_code == 202, response.get_json()
        assert drains_queued(redis_client) == before + 1
