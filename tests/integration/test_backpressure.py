"""Backpressure at intake over the real parts: the stream's progress in Redis, moved by the real drain.

``shared.services.backpressure``: a recording waits while its API process is
more than ``backlog_max`` ahead of the apply stream and the stream is moving;
it never waits for a stream that does not move.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Callable
from typing import Any

from shared.services.backpressure import Backpressure
from shared.wakeups import APPLIED_KEY, publish_settled, read_applied_sequence
from tests.helpers import count_keys, deposit_body, drain_stream, submit, transaction_rows

BATCH = "/v1/transactions/batch"


def settle_one(client: Any, headers: dict[str, str], wallet: uuid.UUID) -> int:
    """Submit a deposit and drain as the worker does; return the progress it stored."""
    response = submit(client, headers, deposit_body(wallet, "1.00"))
    assert response.status_code == 202
    drain_stream(settled=publish_settled)
    transaction_id = response.get_json()["id"]
    return int(transaction_rows([transaction_id])[transaction_id]["lane_sequence"])


def batch_of_deposits(wallet: uuid.UUID, n: int) -> list[dict[str, Any]]:
    return [
        {**deposit_body(wallet, "1.00"), "idempotency_key": str(uuid.uuid4())} for _ in range(n)
    ]


def test_the_drain_stores_how_far_the_stream_is(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    settled = settle_one(client, service_headers, wallet_factory())
    assert read_applied_sequence() == settled


def test_no_stored_progress_reads_as_unknown(redis_client: Any) -> None:
    redis_client.delete(APPLIED_KEY)
    assert read_applied_sequence() is None


def test_a_batch_waits_while_the_stream_is_too_far_behind_and_goes_when_it_catches_up(
    app: Any,
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    backpressure_bound: Callable[..., Backpressure],
) -> None:
    wallet = wallet_factory()
    settle_one(client, service_headers, wallet)  # the stream has a known, moving progress
    backpressure_bound(backlog_max=50, stall_seconds=60)
    first = client.post(
        BATCH, json={"transactions": batch_of_deposits(wallet, 100)}, headers=service_headers
    )
    assert first.status_code == 200  # within the bound when it started
    held = batch_of_deposits(wallet, 100)
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            app.test_client().post(BATCH, json={"transactions": held}, headers=service_headers)
        )
    )
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and answers == []  # 100 ahead of the stream, 50 allowed: it waits
    assert count_keys([item["idempotency_key"] for item in held]) == 0  # and records nothing yet
    drain_stream(settled=publish_settled)  # the stream settles the first batch
    thread.join(30)
    assert [answers[0].status_code] == [200]
    assert {item["status"] for item in answers[0].get_json()["data"]} == {202}
    drain_stream()


def test_a_stream_that_does_not_move_does_not_hold_intake(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    backpressure_bound: Callable[..., Backpressure],
) -> None:
    wallet = wallet_factory()
    settle_one(client, service_headers, wallet)
    backpressure_bound(backlog_max=50, stall_seconds=0.2)
    answers = [
        client.post(
            BATCH, json={"transactions": batch_of_deposits(wallet, 100)}, headers=service_headers
        )
        for _ in range(3)  # nothing drains: the stream stands still behind them
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    results = [item for answer in answers for item in answer.get_json()["data"]]
    assert {item["status"] for item in results} == {202}
    assert {item["transaction"]["status"] for item in results} == {"pending"}
    drain_stream()


def test_held_intake_requests_wait_before_the_pool_and_reads_go_past_them(
    redis_client: Any, backpressure_bound: Callable[..., Backpressure]
) -> None:
    from api.asgi import IntakePacing

    reached: list[tuple[str, str]] = []

    async def pool(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append((scope["method"], scope["path"]))  # where Flask's threads would start

    async def nothing() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def ignore(message: Any) -> None:
        return None

    def request(method: str, path: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "query_string": b""}

    pacing = IntakePacing(pool)
    intake = ["/v1/transactions", "/v1/transactions/batch", f"/v1/transactions/{uuid.uuid4()}/void"]

    async def main() -> None:
        held = [
            asyncio.create_task(pacing(request("POST", intake[n % 3]), nothing, ignore))
            for n in range(20)
        ]
        await asyncio.sleep(0.5)
        assert reached == []  # 1,000 ahead of a moving stream, 100 allowed: all held
        await pacing(request("GET", "/v1/transactions"), nothing, ignore)
        await pacing(request("POST", "/v1/transactions/retry"), nothing, ignore)  # not intake
        assert reached == [("GET", "/v1/transactions"), ("POST", "/v1/transactions/retry")]
        redis_client.set(APPLIED_KEY, 1950)  # the stream catches up within the bound
        await asyncio.wait_for(asyncio.gather(*held), 30)
        assert sorted(reached[2:]) == sorted(("POST", intake[n % 3]) for n in range(20))

    redis_client.set(APPLIED_KEY, 1000)
    try:
        backpressure_bound(backlog_max=100, stall_seconds=60).accepted(2000)
        # A thread of its own: an earlier test may leave an event loop running in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as loop_thread:
            loop_thread.submit(asyncio.run, main()).result(60)
    finally:
        redis_client.delete(APPLIED_KEY)
