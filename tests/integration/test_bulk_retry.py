"""Bulk ops retry over the API and the CLI: exactly the selected failed transactions, audited."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from click.testing import CliRunner

from cli.main import main
from tests.helpers import deposit_body, drain_stream, statuses, submit


def _withdrawal(wallet_id: Any, amount: str = "1.00") -> dict[str, Any]:
    return {"type": "withdrawal", "amount": amount, "currency": "SGD", "source_wallet_id": str(wallet_id)}  # fmt: skip


def _failed(client: Any, headers: dict[str, str], wallet_id: Any, count: int) -> list[str]:
    """Submit ``count`` withdrawals from an empty wallet and apply them: all fail."""
    ids = [submit(client, headers, _withdrawal(wallet_id)).get_json()["id"] for _ in range(count)]
    drain_stream()
    assert {s["failure_code"] for s in statuses(ids).values()} == {"insufficient_funds"}
    return ids


def _fund(client: Any, headers: dict[str, str], wallet_id: Any) -> None:
    submit(client, headers, deposit_body(wallet_id, "10.00"))
    drain_stream()


def test_bulk_retry_moves_exactly_the_selected_failed_transactions(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    selected = _failed(client, service_headers, a, 3)
    other = _failed(client, service_headers, b, 1)
    _fund(client, service_headers, a)
    response = client.post(
        "/v1/transactions/retry",
        json={"wallet_id": str(a), "failure_code": "insufficient_funds"},
        headers={**ops_headers, "X-Request-Id": "req-bulk-1"},
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["count"] == 3 and body["dry_run"] is False
    assert body["transaction_ids"] == selected  # in acceptance order
    assert {s["status"] for s in statuses(selected).values()} == {"pending"}
    assert statuses(other)[other[0]]["status"] == "failed"
    drain_stream()
    assert {s["status"] for s in statuses(selected).values()} == {"completed"}
    events = client.get(
        f"/v1/audit-events?action=transaction.bulk_retry&target_id={selected[0]}",
        headers=ops_headers,
    ).get_json()["data"]
    assert len(events) == 1
    event = events[0]
    assert event["target_ids"] == selected and event["request_id"] == "req-bulk-1"
    assert event["actor"]["type"] == "api_key" and event["actor"]["name"] == "test ops"
    assert event["details"]["wallet_id"] == str(a) and event["details"]["count"] == 3


def test_bulk_retry_dry_run_changes_nothing(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    failed = _failed(client, service_headers, a, 2)
    before = statuses(failed)
    response = client.post(
        "/v1/transactions/retry", json={"wallet_id": str(a), "dry_run": True}, headers=ops_headers
    )
    assert response.get_json()["count"] == 2 and response.get_json()["dry_run"] is True
    assert statuses(failed) == before
    events = client.get(f"/v1/audit-events?target_id={failed[0]}", headers=ops_headers)
    assert events.get_json()["data"] == []


def test_bulk_retry_filters_by_code_and_time(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    _failed(client, service_headers, a, 1)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    for body in ({"since": later}, {"failure_code": "wallet_frozen"}):
        response = client.post(
            "/v1/transactions/retry",
            json={"wallet_id": str(a), "dry_run": True, **body},
            headers=ops_headers,
        )
        assert response.get_json()["count"] == 0, body


def test_bulk_retry_is_ops_only_and_validates_its_body(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str]
) -> None:
    assert (
        client.post("/v1/transactions/retry", json={}, headers=service_headers).status_code == 403
    )
    for body in ({"colour": "red"}, {"failure_code": "nope"}, {"limit": 0}, {"since": "2026-01-01T00:00:00"}):  # fmt: skip
        response = client.post("/v1/transactions/retry", json=body, headers=ops_headers)
        assert response.status_code == 422, body
        assert response.content_type == "application/problem+json"


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=stdin)


def test_cli_bulk_retry_counts_asks_and_retries(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    failed = _failed(client, service_headers, a, 2)
    dry = run("retry", "--failed", "--wallet", str(a), "--dry-run")
    assert dry.exit_code == 0 and "2 failed transaction(s) selected" in dry.output
    declined = run(
        "retry", "--failed", "--wallet", str(a), "--code", "insufficient_funds", stdin="n\n"
    )
    assert declined.exit_code != 0 and "Aborted" in declined.output
    assert {s["status"] for s in statuses(failed).values()} == {"failed"}
    _fund(client, service_headers, a)
    done = run("retry", "--failed", "--wallet", str(a), "--yes")
    assert done.exit_code == 0 and "2 transaction(s) are pending again" in done.output, done.output
    drain_stream()
    assert {s["status"] for s in statuses(failed).values()} == {"completed"}
    event = client.get(
        f"/v1/audit-events?action=transaction.bulk_retry&target_id={failed[0]}", headers=ops_headers
    ).get_json()["data"][0]
    assert event["actor"]["type"] == "cli" and event["actor"]["api_key_id"] is None
    assert event["actor"]["name"] and event["target_ids"] == failed


def test_cli_retry_needs_ids_or_failed() -> None:
    assert run("retry").exit_code == 2
    assert run("retry", "--failed", str(uuid.uuid4())).exit_code == 2
