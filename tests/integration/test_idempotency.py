"""Idempotency (docs/architecture.md, invariant 7): one key per API key maps to one transaction."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import text

from shared import db
from tests.helpers import deposit_body, submit


def count_for_key(key: str) -> int:
    with db.transaction() as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM transactions WHERE idempotency_key = :k"), {"k": key}
            ).scalar_one()
        )


def test_replay_returns_the_same_transaction_with_replayed_header(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id, key = wallet_factory(), f"replay-{uuid.uuid4()}"
    first = submit(client, service_headers, deposit_body(wallet_id, "10.00"), key)
    again = submit(client, service_headers, deposit_body(wallet_id, "10.00"), key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    # The same amount written differently is the same request.
    assert submit(client, service_headers, deposit_body(wallet_id, "10.0"), key).status_code == 200
    assert count_for_key(key) == 1


def test_same_key_with_a_different_body_is_422(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id, key = wallet_factory(), f"reuse-{uuid.uuid4()}"
    assert submit(client, service_headers, deposit_body(wallet_id, "10.00"), key).status_code == 202
    response = submit(client, service_headers, deposit_body(wallet_id, "11.00"), key)
    assert response.status_code == 422 and response.get_json()["code"] == "idempotency_key_reused"
    assert count_for_key(key) == 1


def test_keys_are_scoped_to_the_api_key(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id, key = wallet_factory(), f"scope-{uuid.uuid4()}"
    a = submit(client, service_headers, deposit_body(wallet_id, "10.00"), key).get_json()
    b = submit(client, ops_headers, deposit_body(wallet_id, "10.00"), key).get_json()
    assert a["id"] != b["id"] and count_for_key(key) == 2


def test_rejected_request_leaves_the_key_free(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id, key = wallet_factory(), f"free-{uuid.uuid4()}"
    assert submit(client, service_headers, deposit_body(uuid.uuid4()), key).status_code == 404
    assert submit(client, service_headers, deposit_body(wallet_id, "10.00"), key).status_code == 202


def test_concurrent_submissions_of_one_key_create_one_transaction(
    app: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id, key = wallet_factory(), f"race-{uuid.uuid4()}"
    barrier = threading.Barrier(20)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def one() -> None:
        client = app.test_client()
        barrier.wait()
        response = submit(client, service_headers, deposit_body(wallet_id, "10.00"), key)
        with lock:
            results.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 20
    assert len({transaction_id for _, transaction_id in results}) == 1
    assert sorted(code for code, _ in results) == [200] * 19 + [202]
    assert count_for_key(key) == 1
