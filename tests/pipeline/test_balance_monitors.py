"""Balance monitors through HTTP, Redis and a real worker: the events come with the apply."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import deposit_body, submit, wait_for, wait_terminal

pytestmark = pytest.mark.pipeline


def test_a_worker_triggers_and_clears_a_monitor_with_its_events(
    app: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    client = app.test_client()
    wallet = wallet_factory()
    body = {"wallet_id": str(wallet), "field": "balance", "operator": "gte", "value": "25.00"}
    created = client.post("/v1/balance-monitors", json=body, headers=service_headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    monitor = created.get_json()
    assert monitor["state"] == "clear"
    deposits = [submit(client, service_headers, deposit_body(wallet, "10.00")).get_json()["id"]
                for _ in range(3)]  # fmt: skip
    wait_terminal(deposits, context=worker.log())

    def triggered() -> list[dict[str, Any]]:
        page = client.get("/v1/events?type=balance_monitor.triggered&limit=200",
                          headers=service_headers).get_json()  # fmt: skip
        return [e for e in page["data"] if e["data"]["monitor"]["id"] == monitor["id"]]

    # The event commits with the batch that crossed 25.00, so it is there once the
    # deposits are terminal; the wait only bounds a slow read.
    [event] = wait_for(triggered, timeout_seconds=60, what="balance_monitor.triggered")
    assert event["data"]["monitor"]["state"] == "triggered"
    # However the worker split the deposits into batches, the one holding the third
    # crossed 25.00, and the third is its last transaction on the wallet.
    assert (event["data"]["transaction_id"], event["data"]["balance"]) == (deposits[-1], "30.00")
    withdrawal = {"type": "withdrawal", "amount": "10.00", "currency": "SGD",
                  "source_wallet_id": str(wallet)}  # fmt: skip
    taken = submit(client, service_headers, withdrawal).get_json()["id"]
    wait_terminal([taken], context=worker.log())
    page = client.get(f"/v1/events?transaction_id={taken}", headers=service_headers).get_json()
    cleared = [e for e in page["data"] if e["type"] == "balance_monitor.cleared"]
    assert [e["data"]["balance"] for e in cleared] == ["20.00"]
    now = client.get(f"/v1/balance-monitors/{monitor['id']}", headers=service_headers).get_json()
    assert (now["state"], now["triggered_at"]) == ("clear", None)
    assert len(triggered()) == 1
