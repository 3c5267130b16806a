"""Per-wallet order (design.md invariant 6) through the whole pipeline: HTTP, Redis, a real worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import assert_ledger_consistent, submit, wait_terminal

pytestmark = pytest.mark.pipeline


def test_ten_withdrawals_after_a_deposit_apply_in_acceptance_order(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    wallet_id = str(wallet_factory())
    deposit = submit(
        client,
        service_headers,
        {
            "type": "deposit",
            "amount": "100.00",
            "currency": "SGD",
            "destination_wallet_id": wallet_id,
        },
    ).get_json()
    wait_terminal([deposit["id"]], context=worker.log())
    withdrawals = []
    for _ in range(10):  # one after another: each is accepted before the next is sent
        response = submit(
            client,
            service_headers,
            {
                "type": "withdrawal",
                "amount": "15.00",
                "currency": "SGD",
                "source_wallet_id": wallet_id,
            },
        )
        assert response.status_code == 202
        withdrawals.append(response.get_json()["id"])
    result = wait_terminal(withdrawals, context=worker.log())
    assert [result[w]["status"] for w in withdrawals] == ["completed"] * 6 + ["failed"] * 4
    assert {result[w]["failure_code"] for w in withdrawals[6:]} == {"insufficient_funds"}
    wallet = client.get(f"/v1/wallets/{wallet_id}", headers=service_headers).get_json()
    assert wallet["balance"] == "10.00"
    polled = client.get(
        f"/v1/transactions/{withdrawals[-1]}?wait=5", headers=service_headers
    ).get_json()
    assert polled["failure_code"] == "insufficient_funds" and polled["completed_at"]
    assert_ledger_consistent()
