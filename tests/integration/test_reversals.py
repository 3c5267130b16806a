"""Reversals over HTTP, applied in-process by the real apply path.

A reversal moves money back along a completed deposit, withdrawal, transfer or
capture, in full or in part; its original's completed reversals never add up
to more than its amount, which the apply stream decides in acceptance order.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    ClientThreads,
    assert_ledger_consistent,
    deposit_body,
    drain_stream,
    statuses,
    submit,
    transfer_body,
)
from tests.oracles import Book, assert_explained


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def reverse(
    client: Any, headers: dict[str, str], original_id: str, body: Any = None,
    key: str | None = None,
) -> Any:  # fmt: skip
    return client.post(
        f"/v1/transactions/{original_id}/reverse",
        json=body,
        headers={**headers, "Idempotency-Key": key or str(uuid.uuid4())},
    )


def read(client: Any, headers: dict[str, str], path: str) -> dict[str, Any]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def completed(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """Submit ``body``, apply it, and return the transaction (completed)."""
    response = submit(client, headers, body)
    assert response.status_code == 202, response.get_json()
    drain_stream()
    transaction = read(client, headers, f"/v1/transactions/{response.get_json()['id']}")
    assert transaction["status"] == "completed", transaction
    return transaction


def balance(client: Any, headers: dict[str, str], wallet_id: Any) -> str:
    return str(read(client, headers, f"/v1/wallets/{wallet_id}")["balance"])


def originals(client: Any, headers: dict[str, str], wallet_factory: Any) -> dict[str, Any]:
    """Return a completed transaction of each reversible type, and the wallets they touched."""
    a, b = wallet_factory(), wallet_factory()
    deposit = completed(client, headers, deposit_body(a, "100.00"))
    withdrawal = completed(client, headers, {"type": "withdrawal", "amount": "10.00",
                                            "currency": "SGD", "source_wallet_id": str(a)})  # fmt: skip
    transfer = completed(client, headers, transfer_body(a, b, "30.00"))
    hold = submit(client, headers, {"type": "hold", "amount": "20.00", "currency": "SGD",
                                    "source_wallet_id": str(a)}).get_json()  # fmt: skip
    drain_stream()
    capture = client.post(
        f"/v1/transactions/{hold['id']}/capture",
        json={"amount": "15.00", "destination_wallet_id": str(b)},
        headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    drain_stream()
    # a: 100 - 10 - 30 - 15 = 45; b: 30 + 15 = 45
    return {"a": a, "b": b, "deposit": deposit, "withdrawal": withdrawal, "transfer": transfer,
            "capture": read(client, headers, f"/v1/transactions/{capture['id']}")}  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "amount", "after_a", "after_b"),
    [
        ("deposit", "100.00", "-55.00", None),  # refused below: a holds 45.00
        ("deposit", "40.00", "5.00", "45.00"),
        ("withdrawal", "10.00", "55.00", "45.00"),
        ("transfer", "30.00", "75.00", "15.00"),
        ("capture", "15.00", "60.00", "30.00"),
    ],
)
def test_reversal_moves_money_back_along_its_original(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    kind: str,
    amount: str,
    after_a: str,
    after_b: str | None,
) -> None:
    found = originals(client, service_headers, wallet_factory)
    original = found[kind]
    assert original["reversed_amount"] == "0.00"
    body = None if amount == original["amount"] else {"amount": amount}
    response = reverse(client, service_headers, original["id"], body)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/v1/transactions/{response.get_json()['id']}"
    reversal = response.get_json()
    assert (reversal["type"], reversal["status"], reversal["reverses_id"]) == (
        "reversal", "pending", original["id"],
    )  # fmt: skip
    assert reversal["amount"] == amount and "reversed_amount" not in reversal
    assert (reversal["source_wallet_id"], reversal["destination_wallet_id"]) == (
        original["destination_wallet_id"], original["source_wallet_id"],
    )  # fmt: skip
    drain_stream()
    result = statuses([reversal["id"]])[reversal["id"]]
    if after_b is None:
        assert (result["status"], result["failure_code"]) == ("failed", "insufficient_funds")
        assert (
            read(client, service_headers, f"/v1/transactions/{original['id']}")["reversed_amount"]
            == "0.00"
        )
        assert balance(client, service_headers, found["a"]) == "45.00"
        return
    assert result["status"] == "completed"
    after = read(client, service_headers, f"/v1/transactions/{original['id']}")
    assert (after["status"], after["reversed_amount"]) == ("completed", amount)
    assert balance(client, service_headers, found["a"]) == after_a
    assert balance(client, service_headers, found["b"]) == after_b
    assert_ledger_consistent()


def test_partial_reversals_then_the_default_takes_what_is_left(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    completed(client, service_headers, deposit_body(a, "100.00"))
    original = completed(client, service_headers, transfer_body(a, b, "50.00"))
    for part in ("10.00", "15.00"):
        assert reverse(client, service_headers, original["id"], {"amount": part}).status_code == 202
    drain_stream()
    assert (
        read(client, service_headers, f"/v1/transactions/{original['id']}")["reversed_amount"]
        == "25.00"
    )
    too_much = reverse(client, service_headers, original["id"], {"amount": "25.01"})
    assert too_much.status_code == 422
    assert too_much.get_json()["code"] == "reversal_exceeds_amount"
    assert too_much.get_json()["errors"][0]["field"] == "amount"
    rest = reverse(client, service_headers, original["id"], {"description": "refund"})
    assert rest.status_code == 202 and rest.get_json()["amount"] == "25.00"
    assert rest.get_json()["description"] == "refund"
    drain_stream()
    assert (
        read(client, service_headers, f"/v1/transactions/{original['id']}")["reversed_amount"]
        == "50.00"
    )
    assert (balance(client, service_headers, a), balance(client, service_headers, b)) == (
        "100.00", "0.00",
    )  # fmt: skip
    again = reverse(client, service_headers, original["id"])
    assert again.status_code == 409 and again.get_json()["code"] == "not_reversible"
    assert_ledger_consistent()


@pytest.mark.parametrize("batch_size", [1000, 1])
def test_reversals_beyond_the_original_fail_at_apply_in_acceptance_order(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, batch_size: int
) -> None:
    a, b = wallet_factory(), wallet_factory()
    completed(client, service_headers, deposit_body(a, "100.00"))
    original = completed(client, service_headers, transfer_body(a, b, "100.00"))
    ids = [
        reverse(client, service_headers, original["id"], {"amount": "40.00"}).get_json()["id"]
        for _ in range(3)
    ]  # all accepted: none has completed yet
    drain_stream(batch_size=batch_size)
    result = statuses(ids)
    assert [result[i]["status"] for i in ids] == ["completed", "completed", "failed"]
    assert result[ids[2]]["failure_code"] == "reversal_exceeds_amount"
    failed = read(client, service_headers, f"/v1/transactions/{ids[2]}")
    assert "exceeds the 2000 left to reverse" in failed["failure_message"]
    assert (
        read(client, service_headers, f"/v1/transactions/{original['id']}")["reversed_amount"]
        == "80.00"
    )
    assert balance(client, service_headers, b) == "20.00"


def test_twenty_concurrent_reversals_never_exceed_the_original(
    app: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    """Twenty parts of 15.00 of a 100.00 transfer race: exactly six complete."""
    client = app.test_client()
    a, b = wallet_factory(), wallet_factory()
    book = Book([a, b])
    book.submit(client, service_headers, deposit_body(a, "100.00"))
    drain_stream()
    transfer_id = book.submit(client, service_headers, transfer_body(a, b, "100.00")).get_json()[
        "id"
    ]
    drain_stream()
    barrier = threading.Barrier(20)
    answers: list[int] = []

    def reverser() -> None:
        local, body = app.test_client(), {"amount": "15.00"}
        barrier.wait(60)
        path = f"/v1/transactions/{transfer_id}/reverse"
        response = local.post(
            path, json=body, headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())}
        )
        answers.append(response.status_code)
        assert response.status_code == 202, response.get_json()
        book.record(response.get_json()["id"], body, sent_at=0.0, path=path)

    threads = ClientThreads()
    for _ in range(20):
        threads.start(reverser)
    threads.join(timeout_seconds=60)
    assert answers == [202] * 20
    drain_stream(batch_size=7)  # the twenty span batches
    final = assert_explained(book, allowed_failures={"reversal_exceeds_amount"})
    reversals = [t for t in book.ids if book.accepted[t].type == "reversal"]
    assert sorted(final[t]["status"] for t in reversals) == ["completed"] * 6 + ["failed"] * 14
    assert {final[t]["failure_code"] for t in reversals} == {None, "reversal_exceeds_amount"}
    assert (
        read(client, service_headers, f"/v1/transactions/{transfer_id}")["reversed_amount"]
        == "90.00"
    )


def test_reverse_is_idempotent_by_key(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    original = completed(client, service_headers, deposit_body(a, "20.00"))
    first = reverse(client, service_headers, original["id"], key="reverse-once")
    assert first.status_code == 202
    replay = reverse(client, service_headers, original["id"], key="reverse-once")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == first.get_json()["id"]
    drain_stream()
    # Nothing is left to reverse now, yet the same request replays what it did.
    later = reverse(client, service_headers, original["id"], key="reverse-once")
    assert later.status_code == 200
    assert (later.get_json()["id"], later.get_json()["status"]) == (
        first.get_json()["id"], "completed",
    )  # fmt: skip
    reused = reverse(client, service_headers, original["id"], {"amount": "1.00"}, "reverse-once")
    assert reused.status_code == 422 and reused.get_json()["code"] == "idempotency_key_reused"
    assert balance(client, service_headers, a) == "0.00"


def test_reverse_refuses_what_cannot_be_reversed(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    completed(client, service_headers, deposit_body(a, "100.00"))
    hold = submit(client, service_headers, {"type": "hold", "amount": "5.00", "currency": "SGD",
                                            "source_wallet_id": str(a)}).get_json()  # fmt: skip
    group = submit(client, service_headers, {"type": "group", "legs": [
        {"source_wallet_id": str(a), "destination_wallet_id": str(b), "amount": "1.00",
         "currency": "SGD"},
        {"source_wallet_id": str(b), "destination_wallet_id": str(a), "amount": "1.00",
         "currency": "SGD"}]}).get_json()  # fmt: skip
    failed = submit(client, service_headers, transfer_body(a, b, "500.00")).get_json()
    drain_stream()
    void = client.post(
        f"/v1/transactions/{hold['id']}/void",
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())},
    ).get_json()
    transfer = completed(client, service_headers, transfer_body(a, b, "10.00"))
    reversal = reverse(client, service_headers, transfer["id"]).get_json()
    drain_stream()
    for transaction, why in [
        (hold, "a hold"), (group, "a group"), (void, "a void"), (reversal, "a reversal"),
        (failed, "is failed"),
    ]:  # fmt: skip
        response = reverse(client, service_headers, transaction["id"])
        assert response.status_code == 409, (why, response.get_json())
        assert response.get_json()["code"] == "not_reversible"
        assert why in response.get_json()["detail"]


def test_reverse_refuses_a_pending_original(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    pending = submit(client, service_headers, deposit_body(a, "10.00")).get_json()
    response = reverse(client, service_headers, pending["id"], key=f"early-{uuid.uuid4()}")
    assert response.status_code == 409 and response.get_json()["code"] == "not_reversible"
    assert "is pending" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": "1.001"}, 422, "invalid_amount"),
        ({"amount": "0"}, 422, "invalid_amount"),
        ({"amount": 5}, 422, "validation_failed"),
        ({"destination_wallet_id": str(uuid.uuid4())}, 422, "validation_failed"),
        ([], 400, "malformed_request"),
    ],
)
def test_reverse_validates_its_body(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    body: Any,
    status: int,
    code: str,
) -> None:
    original = completed(client, service_headers, deposit_body(wallet_factory(), "10.00"))
    response = reverse(client, service_headers, original["id"], body)
    assert (response.status_code, response.get_json()["code"]) == (status, code)


def test_reverse_of_an_unknown_transaction_is_not_found(
    client: Any, service_headers: dict[str, str]
) -> None:
    for original_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = reverse(client, service_headers, original_id)
        assert response.status_code == 404
        assert response.get_json()["code"] == "transaction_not_found"
    missing_key = client.post(f"/v1/transactions/{uuid.uuid4()}/reverse", headers=service_headers)
    assert missing_key.status_code == 400


def test_a_completed_reversal_gives_its_original_a_reversed_event(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    completed(client, service_headers, deposit_body(a, "100.00"))
    original = completed(client, service_headers, transfer_body(a, b, "60.00"))
    for part in ("10.00", "20.00", "50.00"):  # the last one fails: 30.00 is left
        reverse(client, service_headers, original["id"], {"amount": part})
    drain_stream()
    events = read(client, service_headers, f"/v1/events?transaction_id={original['id']}")["data"]
    reversed_ = [e for e in events if e["type"] == "transaction.reversed"]
    # Newest first; each carries the original as it was right after its reversal.
    assert [e["data"]["reversed_amount"] for e in reversed_] == ["30.00", "10.00"]
    assert {e["data"]["id"] for e in reversed_} == {original["id"]}
    assert {e["data"]["status"] for e in reversed_} == {"completed"}
    completed_event = [e for e in events if e["type"] == "transaction.completed"]
    assert completed_event[0]["data"]["reversed_amount"] == "0.00"
    typed = read(client, service_headers, "/v1/events?type=transaction.reversed&limit=200")
    assert {e["id"] for e in reversed_} <= {e["id"] for e in typed["data"]}


def test_an_endpoint_subscribed_to_reversals_gets_a_delivery_per_completed_reversal(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    endpoint = client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/x", "events": ["transaction.reversed"]},
        headers=ops_headers,
    ).get_json()["id"]
    try:
        a = wallet_factory()
        original = completed(client, service_headers, deposit_body(a, "10.00"))
        reverse(client, service_headers, original["id"], {"amount": "4.00"})
        drain_stream()
        deliveries = read(client, ops_headers, f"/v1/webhook-endpoints/{endpoint}/deliveries")
        assert [d["event_type"] for d in deliveries["data"]] == ["transaction.reversed"]
        [event] = [
            e
            for e in read(client, service_headers, f"/v1/events?transaction_id={original['id']}")[
                "data"
            ]
            if e["id"] == deliveries["data"][0]["event_id"]
        ]
        assert event["data"]["reversed_amount"] == "4.00"
    finally:
        client.delete(f"/v1/webhook-endpoints/{endpoint}", headers=ops_headers)
