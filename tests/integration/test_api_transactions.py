"""``/v1/transactions`` intake and reads over HTTP; applied in-process with the real apply path.

These tests need no worker: where an outcome matters they drain the stream by
calling the same service the worker task calls.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.helpers import deposit_body, drain_stream, submit, transfer_body


def test_submit_deposit_is_202_pending_with_headers(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = wallet_factory()
    response = submit(
        client,
        service_headers,
        {
            **deposit_body(wallet_id),
            "description": "top-up",
            "metadata": {"source": "bank_transfer"},
        },
    )
    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/transactions/{body['id']}"
    assert response.headers["Retry-After"] == "1"
    assert body["status"] == "pending" and body["amount"] == "100.00" and body["attempts"] == 0
    assert (
        body["destination_wallet_id"] == str(wallet_id) and body["source_wallet_id"]
    )  # system wallet
    assert body["metadata"] == {"source": "bank_transfer"} and body["description"] == "top-up"
    assert body["completed_at"] is None and body["failure_code"] is None


def test_submitted_transactions_settle_when_drained(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    dep = submit(client, service_headers, deposit_body(a)).get_json()
    drain_stream()
    tr = submit(client, service_headers, transfer_body(a, b, "15.5")).get_json()
    wd = submit(
        client,
        service_headers,
        {"type": "withdrawal", "amount": "500.00", "currency": "SGD", "source_wallet_id": str(a)},
    ).get_json()
    drain_stream()
    get = lambda t: client.get(f"/v1/transactions/{t['id']}", headers=service_headers).get_json()  # noqa: E731
    assert get(dep)["status"] == "completed" and get(dep)["completed_at"]
    assert get(tr)["status"] == "completed" and get(tr)["amount"] == "15.50"
    failed = get(wd)
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    wallet = client.get(f"/v1/wallets/{a}", headers=service_headers).get_json()
    assert wallet["balance"] == "84.50" and wallet["available_balance"] == "84.50"
    entries = client.get(f"/v1/wallets/{a}/entries?limit=1", headers=service_headers).get_json()
    assert entries["data"][0]["sequence"] == 2 and entries["data"][0]["direction"] == "debit"
    assert entries["data"][0]["balance_after"] == "84.50"
    older = client.get(
        f"/v1/wallets/{a}/entries?cursor={entries['next_cursor']}", headers=service_headers
    ).get_json()
    assert [e["sequence"] for e in older["data"]] == [1] and older["next_cursor"] is None
    as_of = client.get(
        f"/v1/wallets/{a}/balance?as_of={older['data'][0]['created_at']}", headers=service_headers
    )
    assert as_of.get_json()["balance"] == "100.00"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"amount": "1.005"}, "amount"), ({"amount": "-1"}, "amount"), ({"amount": "0"}, "amount"),
        ({"amount": "1e3"}, "amount"), ({"amount": 10}, "amount"), ({"amount": "NaN"}, "amount"),
        ({"amount": "10000000000000.01"}, "amount"), ({"currency": "sgd"}, "currency"), ({"currency": "XYZ"}, "currency"),
        ({"type": "refund"}, "type"), ({"destination_wallet_id": "nope"}, "destination_wallet_id"),
        ({"description": "x" * 501}, "description"), ({"metadata": {"k": "v" * 501}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"), ({"metadata": {"k": 1}}, "metadata.k"),
        ({"source_wallet_id": str(uuid.uuid4())}, "source_wallet_id"),
    ],
)  # fmt: skip
def test_submit_rejects_invalid_bodies_with_field_errors(
    client: Any, service_headers: dict[str, str], patch: dict[str, Any], field: str
) -> None:
    response = submit(client, service_headers, {**deposit_body(uuid.uuid4()), **patch})
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "validation_failed"
    assert field in [e["field"] for e in problem["errors"]], problem


def test_submit_rejects_missing_wallet_ids_for_the_type(
    client: Any, service_headers: dict[str, str]
) -> None:
    response = submit(
        client, service_headers, {"type": "transfer", "amount": "1", "currency": "SGD"}
    )
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert response.status_code == 422 and {"source_wallet_id", "destination_wallet_id"} <= fields


def test_submit_rejects_same_source_and_destination(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    response = submit(client, service_headers, transfer_body(a, a, "1"))
    assert response.status_code == 422 and response.get_json()["code"] == "validation_failed"


def test_submit_unknown_wallet_is_404(client: Any, service_headers: dict[str, str]) -> None:
    response = submit(client, service_headers, deposit_body(uuid.uuid4()))
    assert response.status_code == 404 and response.get_json()["code"] == "wallet_not_found"


def test_submit_currency_mismatch_is_422(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    response = submit(client, service_headers, deposit_body(wallet_factory("JPY"), "5", "SGD"))
    assert response.status_code == 422 and response.get_json()["code"] == "currency_mismatch"
    disabled = submit(client, service_headers, deposit_body(wallet_factory(), "5", "CHF"))
    assert disabled.status_code == 422 and disabled.get_json()["code"] == "currency_not_enabled"


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "idempotency_key_missing"),
        ("", "idempotency_key_missing"),
        ("has space", "idempotency_key_invalid"),
        ("x" * 256, "idempotency_key_invalid"),
        ("é", "idempotency_key_invalid"),
    ],
)
def test_submit_needs_a_valid_idempotency_key(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, key: str | None, code: str
) -> None:
    headers = dict(service_headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        response = client.post(
            "/v1/transactions", json=deposit_body(wallet_factory()), headers=headers
        )
    except ValueError:  # werkzeug refuses non-latin-1 header values before sending
        return
    assert response.status_code == 400 and response.get_json()["code"] == code


def test_get_unknown_transaction_is_404(client: Any, service_headers: dict[str, str]) -> None:
    for unknown in (uuid.uuid4(), "x"):
        response = client.get(f"/v1/transactions/{unknown}", headers=service_headers)
        assert (
            response.status_code == 404 and response.get_json()["code"] == "transaction_not_found"
        )


def test_get_with_wait_returns_pending_after_the_wait(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    body = submit(client, service_headers, deposit_body(wallet_factory())).get_json()
    waited = client.get(
        f"/v1/transactions/{body['id']}?wait=0.2", headers=service_headers
    ).get_json()
    assert waited["status"] == "pending"
    for bad in ("31", "-1", "soon"):
        assert (
            client.get(
                f"/v1/transactions/{body['id']}?wait={bad}", headers=service_headers
            ).status_code
            == 422
        )


def test_list_transactions_filters_and_pages(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    ids = [
        submit(client, service_headers, deposit_body(a, f"{i}.00")).get_json()["id"]
        for i in (1, 2, 3)
    ]
    page = client.get(f"/v1/transactions?wallet_id={a}&limit=2", headers=service_headers).get_json()
    assert [t["id"] for t in page["data"]] == ids[::-1][:2]
    rest = client.get(
        f"/v1/transactions?wallet_id={a}&cursor={page['next_cursor']}", headers=service_headers
    ).get_json()
    assert [t["id"] for t in rest["data"]] == ids[:1]
    drain_stream()
    done = client.get(
        f"/v1/transactions?wallet_id={a}&status=completed&type=deposit", headers=service_headers
    ).get_json()
    assert len(done["data"]) == 3
    none = client.get(
        f"/v1/transactions?wallet_id={a}&status=failed", headers=service_headers
    ).get_json()
    assert none["data"] == []
    assert client.get("/v1/transactions?status=lost", headers=service_headers).status_code == 422


def test_retry_is_ops_only_and_only_for_failed(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    wd = submit(
        client,
        service_headers,
        {"type": "withdrawal", "amount": "5.00", "currency": "SGD", "source_wallet_id": str(a)},
    ).get_json()
    not_yet = client.post(f"/v1/transactions/{wd['id']}/retry", headers=ops_headers)
    assert not_yet.status_code == 409 and not_yet.get_json()["code"] == "not_retryable"
    drain_stream()
    assert (
        client.get(f"/v1/transactions/{wd['id']}", headers=service_headers).get_json()["status"]
        == "failed"
    )
    assert (
        client.post(f"/v1/transactions/{wd['id']}/retry", headers=service_headers).status_code
        == 403
    )
    submit(client, service_headers, deposit_body(a, "10.00"))
    retried = client.post(f"/v1/transactions/{wd['id']}/retry", headers=ops_headers)
    assert retried.status_code == 202
    body = retried.get_json()
    assert (body["status"], body["failure_code"], body["attempts"]) == ("pending", None, 0)
    drain_stream()  # the retry went to the back of the lane: the deposit applies first
    assert (
        client.get(f"/v1/transactions/{wd['id']}", headers=service_headers).get_json()["status"]
        == "completed"
    )
    assert (
        client.post(f"/v1/transactions/{uuid.uuid4()}/retry", headers=ops_headers).status_code
        == 404
    )
