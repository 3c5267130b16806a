"""``/v1/wallets`` over HTTP (Flask test client), against the real database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


def create(client: Any, headers: dict[str, str], owner_ref: str, currency: str = "SGD") -> Any:
    return client.post(
        "/v1/wallets", json={"owner_ref": owner_ref, "currency": currency}, headers=headers
    )


def test_create_wallet_returns_201_with_location(
    client: Any, service_headers: dict[str, str]
) -> None:
    owner = f"+65{uuid.uuid4().int % 10**8:08d}"
    response = create(client, service_headers, owner)
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/wallets/{body['id']}"
    assert body["owner_ref"] == owner and body["currency"] == "SGD"
    assert (body["balance"], body["available_balance"], body["held_balance"]) == ("0.00",) * 3
    assert body["status"] == "active" and body["is_system"] is False
    assert body["created_at"].endswith("Z")


def test_create_wallet_renders_jpy_without_fraction(
    client: Any, service_headers: dict[str, str]
) -> None:
    body = create(client, service_headers, f"jpy-{uuid.uuid4()}", "JPY").get_json()
    assert body["balance"] == "0"


def test_create_wallet_twice_is_409_naming_the_existing(
    client: Any, service_headers: dict[str, str]
) -> None:
    owner = f"dup-{uuid.uuid4()}"
    first = create(client, service_headers, owner).get_json()
    response = create(client, service_headers, owner)
    assert response.status_code == 409
    problem = response.get_json()
    assert problem["code"] == "wallet_exists" and first["id"] in problem["detail"]
    assert response.content_type == "application/problem+json"
    # Another currency for the same owner is a different wallet.
    assert create(client, service_headers, owner, "USD").status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"owner_ref": "", "currency": "SGD"}, "owner_ref"),
        ({"owner_ref": "x" * 129, "currency": "SGD"}, "owner_ref"),
        ({"owner_ref": " padded", "currency": "SGD"}, "owner_ref"),
        ({"owner_ref": "a", "currency": "sgd"}, "currency"),
        ({"owner_ref": "a"}, "currency"),
        ({"owner_ref": "a", "currency": "SGD", "extra": 1}, "extra"),
        ({"owner_ref": 5, "currency": "SGD"}, "owner_ref"),
    ],
)
def test_create_wallet_rejects_bad_bodies(
    client: Any, service_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/wallets", json=body, headers=service_headers)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["code"] == "validation_failed"
    assert field in [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize("currency", ["XXY", "CHF"])
def test_create_wallet_rejects_disabled_currency(
    client: Any, service_headers: dict[str, str], currency: str
) -> None:
    response = create(client, service_headers, f"c-{uuid.uuid4()}", currency)
    assert response.status_code == 422
    assert response.get_json()["code"] == "currency_not_enabled"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_create_wallet_rejects_non_object_bodies(
    client: Any, service_headers: dict[str, str], raw: bytes
) -> None:
    response = client.post(
        "/v1/wallets", data=raw, headers={**service_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.get_json()["code"] == "malformed_request"


def test_get_wallet_and_unknown_ids(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = wallet_factory()
    assert client.get(f"/v1/wallets/{wallet_id}", headers=service_headers).get_json()["id"] == str(
        wallet_id
    )
    for unknown in (uuid.uuid4(), "not-a-uuid"):
        response = client.get(f"/v1/wallets/{unknown}", headers=service_headers)
        assert response.status_code == 404
        assert response.get_json()["code"] == "wallet_not_found"


def test_list_wallets_by_owner_pages_newest_first(
    client: Any, service_headers: dict[str, str]
) -> None:
    owner = f"list-{uuid.uuid4()}"
    ids = [
        create(client, service_headers, owner, c).get_json()["id"] for c in ("SGD", "JPY", "USD")
    ]
    page = client.get(f"/v1/wallets?owner_ref={owner}&limit=2", headers=service_headers).get_json()
    assert [w["id"] for w in page["data"]] == ids[::-1][:2]
    rest = client.get(
        f"/v1/wallets?owner_ref={owner}&limit=2&cursor={page['next_cursor']}",
        headers=service_headers,
    ).get_json()
    assert [w["id"] for w in rest["data"]] == [ids[0]] and rest["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=x", "cursor=%%%"])
def test_list_wallets_rejects_bad_paging(
    client: Any, service_headers: dict[str, str], query: str
) -> None:
    response = client.get(f"/v1/wallets?{query}", headers=service_headers)
    assert response.status_code in (400, 422)
    assert response.get_json()["code"] in ("validation_failed", "invalid_cursor")


def test_patch_wallet_freezes_for_ops_only(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = wallet_factory()
    denied = client.patch(
        f"/v1/wallets/{wallet_id}", json={"status": "frozen"}, headers=service_headers
    )
    assert denied.status_code == 403 and denied.get_json()["code"] == "forbidden"
    frozen = client.patch(
        f"/v1/wallets/{wallet_id}", json={"status": "frozen"}, headers=ops_headers
    )
    assert frozen.status_code == 200 and frozen.get_json()["status"] == "frozen"
    bad = client.patch(f"/v1/wallets/{wallet_id}", json={"status": "closed"}, headers=ops_headers)
    assert bad.status_code == 422
    active = client.patch(
        f"/v1/wallets/{wallet_id}", json={"status": "active"}, headers=ops_headers
    )
    assert active.get_json()["status"] == "active"
    missing = client.patch(
        f"/v1/wallets/{uuid.uuid4()}", json={"status": "frozen"}, headers=ops_headers
    )
    assert missing.status_code == 404


def test_entries_and_balance_of_a_new_wallet(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = wallet_factory()
    entries = client.get(f"/v1/wallets/{wallet_id}/entries", headers=service_headers).get_json()
    assert entries == {"data": [], "next_cursor": None}
    balance = client.get(
        f"/v1/wallets/{wallet_id}/balance?as_of=2026-01-01T00:00:00Z", headers=service_headers
    ).get_json()
    assert balance["balance"] == "0.00" and balance["as_of"].startswith("2026-01-01T00:00:00")
    bad = client.get(f"/v1/wallets/{wallet_id}/balance?as_of=yesterday", headers=service_headers)
    assert bad.status_code == 422
    missing = client.get(f"/v1/wallets/{uuid.uuid4()}/entries", headers=service_headers)
    assert missing.status_code == 404
