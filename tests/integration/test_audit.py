"""The audit log: every ops action appends a row with its actor; the table is append-only."""

from __future__ import annotations

import getpass
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cli.main import main
from shared import db
from tests.helpers import drain_stream, submit


def events(client: Any, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{name}={value}" for name, value in filters.items())
    response = client.get(f"/v1/audit-events?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_freeze_and_unfreeze_are_audited_with_key_and_request_id(
    client: Any, ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = str(wallet_factory())
    for status, request_id in (("frozen", "req-freeze"), ("active", "req-unfreeze")):
        response = client.patch(
            f"/v1/wallets/{wallet_id}",
            json={"status": status},
            headers={**ops_headers, "X-Request-Id": request_id},
        )
        assert response.status_code == 200
    found = events(client, ops_headers, target_id=wallet_id)
    assert [e["action"] for e in found] == ["wallet.unfreeze", "wallet.freeze"]  # newest first
    assert [e["request_id"] for e in found] == ["req-unfreeze", "req-freeze"]
    actor = found[0]["actor"]
    assert actor["type"] == "api_key" and actor["name"] == "test ops" and actor["api_key_id"]
    assert found[1]["details"] == {"status": "frozen"} and found[0]["created_at"].endswith("Z")


def test_a_refused_action_records_nothing(
    client: Any, ops_headers: dict[str, str], service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = str(wallet_factory())
    assert client.patch(f"/v1/wallets/{wallet_id}", json={"status": "frozen"}, headers=service_headers).status_code == 403  # fmt: skip
    body = {"type": "deposit", "amount": "1.00", "currency": "SGD", "destination_wallet_id": wallet_id}  # fmt: skip
    transaction_id = submit(client, service_headers, body).get_json()["id"]
    assert client.post(f"/v1/transactions/{transaction_id}/retry", headers=ops_headers).status_code == 409  # fmt: skip
    assert events(client, ops_headers, target_id=wallet_id) == []
    assert events(client, ops_headers, target_id=transaction_id) == []
    drain_stream()


def test_retry_and_reconciliation_are_audited(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet_id = str(wallet_factory())
    body = {"type": "withdrawal", "amount": "1.00", "currency": "SGD", "source_wallet_id": wallet_id}  # fmt: skip
    transaction_id = submit(client, service_headers, body).get_json()["id"]
    drain_stream()
    assert client.post(f"/v1/transactions/{transaction_id}/retry", headers=ops_headers).status_code == 202  # fmt: skip
    drain_stream()
    [event] = events(client, ops_headers, target_id=transaction_id)
    assert event["action"] == "transaction.retry" and event["target_ids"] == [transaction_id]
    run_id = client.post("/v1/reconciliations", headers=ops_headers).get_json()["id"]
    [started] = events(client, ops_headers, target_id=run_id)
    assert started["action"] == "reconciliation.start"


def test_cli_key_create_and_revoke_are_audited_as_the_os_user(
    client: Any, ops_headers: dict[str, str]
) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--role", "service", "--name", "audited"])
    assert created.exit_code == 0, created.output
    key_id = created.output.split("id:")[1].split()[0]
    secret = created.output.split("secret: ")[1].strip()
    listed = runner.invoke(main, ["keys", "list"])
    assert key_id in listed.output and secret not in listed.output
    assert runner.invoke(main, ["keys", "revoke", key_id]).exit_code == 0
    found = events(client, ops_headers, target_id=key_id)
    assert [e["action"] for e in found] == ["api_key.revoke", "api_key.create"]
    for event in found:
        assert event["actor"] == {"type": "cli", "api_key_id": None, "name": getpass.getuser()}
        assert secret not in str(event)
    assert key_id in runner.invoke(main, ["keys", "list", "--all"]).output
    assert key_id not in runner.invoke(main, ["keys", "list"]).output


def test_audit_events_are_ops_only_and_paginate(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    assert client.get("/v1/audit-events", headers=service_headers).status_code == 403
    wallet_id = str(wallet_factory())
    for status in ("frozen", "active", "frozen"):
        client.patch(f"/v1/wallets/{wallet_id}", json={"status": status}, headers=ops_headers)
    seen, cursor = [], None
    while True:
        url = f"/v1/audit-events?target_id={wallet_id}&limit=2" + (f"&cursor={cursor}" if cursor else "")  # fmt: skip
        page = client.get(url, headers=ops_headers).get_json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["action"] for e in seen] == ["wallet.freeze", "wallet.unfreeze", "wallet.freeze"]
    assert len({e["id"] for e in seen}) == 3
    only = events(client, ops_headers, target_id=wallet_id, action="wallet.unfreeze")
    assert len(only) == 1
    bad = client.get("/v1/audit-events?cursor=nope", headers=ops_headers)
    assert bad.status_code == 400 and bad.get_json()["code"] == "invalid_cursor"
    assert client.get(f"/v1/audit-events?target_id={uuid.uuid4()}", headers=ops_headers).get_json()["data"] == []  # fmt: skip


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"],
)
def test_audit_events_are_append_only(
    client: Any, ops_headers: dict[str, str], statement: str
) -> None:
    client.post("/v1/reconciliations", headers=ops_headers)  # at least one row
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text(statement))


def test_webhook_endpoint_changes_are_audited_without_secrets(
    client: Any, ops_headers: dict[str, str]
) -> None:
    created = client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/audit?token=s3cret", "events": ["transaction.failed"]},
        headers=ops_headers,
    )
    assert created.status_code == 201, created.get_json()
    endpoint_id, secret = created.get_json()["id"], created.get_json()["secret"]
    path = f"/v1/webhook-endpoints/{endpoint_id}"
    assert client.patch(path, json={"status": "disabled"}, headers=ops_headers).status_code == 200
    assert client.delete(path, headers=ops_headers).status_code == 204
    found = events(client, ops_headers, target_id=endpoint_id)
    assert [e["action"] for e in found] == [
        "webhook_endpoint.delete", "webhook_endpoint.update", "webhook_endpoint.create",
    ]  # fmt: skip
    assert found[1]["details"] == {"status": "disabled"}
    assert found[2]["details"]["url"] == "http://127.0.0.1:9/audit"
    assert "s3cret" not in str(found) and secret not in str(found)
