"""Keys and roles on every route, per-key idempotency, unknown fields, key revocation.

The routes come from the OpenAPI route table (``api.contract.OPERATIONS``),
so a route added later is covered without editing this file.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest

from api.contract import OPERATIONS
from tests.helpers import deposit_body, submit


def _routes(app: Any, role: str | None = None) -> list[tuple[str, str]]:
    """Return ``(method, path)`` of every ``/v1`` route (of ``role``), ids filled with UUIDs."""
    from api.openapi import documented_rules

    found = []
    for method, rule in documented_rules(app):
        operation = OPERATIONS.get(rule.endpoint)
        if not rule.rule.startswith("/v1") or operation is None:
            continue
        if role is None or operation.role == role:
            found.append((method, re.sub(r"<(?:\w+:)?\w+>", str(uuid.uuid4()), rule.rule)))
    return found


def _app() -> Any:
    from api import create_app

    return create_app({"TESTING": True})


_APP = _app()
V1_ROUTES = _routes(_APP)
OPS_ROUTES = _routes(_APP, "ops")


def test_the_route_tables_are_not_empty() -> None:
    assert len(V1_ROUTES) >= 20 and len(OPS_ROUTES) >= 7


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dGFsbHk6dGFsbHk=", "Bearer tally_service_unknown",
     "tally_service_no_scheme", "Bearer a b c"],
    ids=["none", "empty", "no-secret", "blank-secret", "basic", "unknown", "no-scheme", "spaces"],
)  # fmt: skip
@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=lambda v: str(v))
def test_every_v1_route_needs_a_known_key(
    client: Any, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "unauthenticated"


@pytest.mark.parametrize(("method", "path"), OPS_ROUTES, ids=lambda v: str(v))
def test_a_service_key_gets_403_on_every_ops_route(
    client: Any, service_headers: dict[str, str], method: str, path: str
) -> None:
    response = client.open(path, method=method, headers=service_headers)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "forbidden"


def test_a_revoked_key_stops_working_once_its_cache_entry_expires(client: Any) -> None:
    """Refused within ``KNOWN_KEY_TTL_SECONDS`` (1 s) by construction: the cache holds a key no longer.

    The wait is bounded far above that, so a slow machine makes the test slower, never red.
    """
    from click.testing import CliRunner

    from api.auth import KNOWN_KEY_TTL_SECONDS
    from cli.main import main

    assert KNOWN_KEY_TTL_SECONDS <= 1.0

    created = CliRunner().invoke(main, ["keys", "create", "--role", "service", "--name", "gone"])
    key_id = created.output.split("id:")[1].split()[0]
    headers = {"Authorization": f"Bearer {created.output.split('secret: ')[1].strip()}"}
    assert client.get("/v1/wallets?limit=1", headers=headers).status_code == 200  # now cached
    assert CliRunner().invoke(main, ["keys", "revoke", key_id]).exit_code == 0
    revoked_at = time.monotonic()
    while client.get("/v1/wallets?limit=1", headers=headers).status_code != 401:
        assert time.monotonic() - revoked_at < 60, "the revoked key still works after 60 s"
        time.sleep(0.05)


def test_a_key_never_replays_another_keys_idempotency_record(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    other = _other_service_headers()
    wallet_id = wallet_factory()
    idempotency_key = f"shared-{uuid.uuid4()}"
    first = submit(client, service_headers, deposit_body(wallet_id, "1.00"), idempotency_key)
    assert first.status_code == 202
    # The same key string and body from another API key: a new transaction, not a replay.
    second = submit(client, other, deposit_body(wallet_id, "1.00"), idempotency_key)
    assert second.status_code == 202 and "Idempotent-Replayed" not in second.headers
    assert second.get_json()["id"] != first.get_json()["id"]
    # Another body from the other key is not "reused" either: nothing of the first leaks.
    third = submit(client, other, deposit_body(wallet_id, "2.00"), f"{idempotency_key}-b")
    assert third.status_code == 202
    replay = submit(client, service_headers, deposit_body(wallet_id, "1.00"), idempotency_key)
    assert replay.status_code == 200 and replay.get_json()["id"] == first.get_json()["id"]


def _other_service_headers() -> dict[str, str]:
    from shared import db
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        _, secret = create_api_key(session, role=Role.SERVICE, name="another service")
    return {"Authorization": f"Bearer {secret}"}


def _bodies(wallet_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    transaction_path = f"/v1/transactions/{uuid.uuid4()}"
    deposit = {"type": "deposit", "amount": "1.00", "currency": "SGD", "destination_wallet_id": wallet_id}  # fmt: skip
    return [
        ("POST", "/v1/wallets", {"owner_ref": f"x-{uuid.uuid4()}", "currency": "SGD"}),
        ("PATCH", f"/v1/wallets/{wallet_id}", {"status": "frozen"}),
        ("POST", "/v1/transactions", deposit),
        (
            "POST",
            "/v1/transactions",
            {**deposit, "type": "withdrawal", "destination_wallet_id": None},
        ),  # fmt: skip
        ("POST", f"{transaction_path}/capture", {"amount": "1.00"}),
        ("POST", f"{transaction_path}/void", {}),
        ("POST", "/v1/transactions/retry", {"dry_run": True}),
    ]


@pytest.mark.parametrize("index", range(7))
def test_unknown_json_fields_are_422(
    client: Any, ops_headers: dict[str, str], wallet_factory: Any, index: int
) -> None:
    method, path, body = _bodies(str(wallet_factory()))[index]
    body = {key: value for key, value in body.items() if value is not None}
    headers = {**ops_headers, "Idempotency-Key": str(uuid.uuid4())}
    response = client.open(path, method=method, json={**body, "destination_walet_id": "x"}, headers=headers)  # fmt: skip
    assert response.status_code == 422, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["code"] == "validation_failed"
    assert "destination_walet_id" in [error["field"] for error in problem["errors"]]
