"""Overdraft limits through the pipeline: HTTP, Redis, a real worker applying concurrent debits.

Concurrent debits of a wallet apply one batch at a time in acceptance order,
each seeing the balance the previous one left, so however they interleave
the wallet stops exactly at ``-overdraft_limit``. An ops PATCH lowering the
limit meanwhile takes the wallet's row lock, as the apply does: each apply
posts against the limit committed before it, and a limit below what the
wallet uses is refused, so no apply ever meets the database's check
constraint (a drain that did would fail, and its transactions would end
``retries_exhausted``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import (
    ClientThreads,
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    submit,
    transfer_body,
    wait_terminal,
)

pytestmark = pytest.mark.pipeline


def funded_with_limit(
    client: Any, headers: dict[str, dict[str, str]], wallet_factory: Any, worker: Any,
    amount: str, limit: str,
) -> str:  # fmt: skip
    """Return a new wallet holding ``amount`` with an overdraft limit of ``limit``."""
    wallet_id = str(wallet_factory())
    deposit = submit(client, headers["service"], deposit_body(wallet_id, amount)).get_json()
    wait_terminal([deposit["id"]], context=worker.log())
    response = client.patch(
        f"/v1/wallets/{wallet_id}", json={"overdraft_limit": limit}, headers=headers["ops"]
    )
    assert response.status_code == 200, response.get_json()
    return wallet_id


def debit_concurrently(
    client: Any, headers: dict[str, str], bodies: list[dict[str, Any]], threads: ClientThreads,
    accepted: list[str], *, clients: int = 8,
) -> None:  # fmt: skip
    """Submit ``bodies`` from ``clients`` threads at once, collecting the accepted ids."""

    def run(share: list[dict[str, Any]]) -> None:
        for body in share:
            response = submit(client, headers, body)
            assert response.status_code == 202, response.get_json()
            accepted.append(response.get_json()["id"])

    for index in range(clients):
        threads.start(run, bodies[index::clients])


def test_concurrent_transfers_stop_exactly_at_the_limit(
    app: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, worker: Any,
) -> None:  # fmt: skip
    client = app.test_client()
    headers = {"service": service_headers, "ops": ops_headers}
    a = funded_with_limit(client, headers, wallet_factory, worker, "20.00", "50.00")
    b = str(wallet_factory())
    accepted: list[str] = []
    threads = ClientThreads()
    debit_concurrently(
        app.test_client(), service_headers, [transfer_body(a, b, "5.00")] * 40, threads, accepted
    )
    threads.join()
    result = wait_terminal(accepted, context=worker.log())
    outcomes = sorted((r["status"], r["failure_code"]) for r in result.values())
    # 20.00 + 50.00 of overdraft pays fourteen transfers of 5.00, whichever they are.
    assert outcomes == [("completed", None)] * 14 + [("failed", "insufficient_funds")] * 26
    assert (balance_minor(a), balance_minor(b)) == (-5_000, 7_000)
    body = client.get(f"/v1/wallets/{a}", headers=service_headers).get_json()
    assert (body["balance"], body["available_balance"]) == ("-50.00", "-50.00")
    assert_ledger_consistent()


def test_lowering_the_limit_while_debits_apply_never_passes_either_limit(
    app: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, worker: Any,
) -> None:  # fmt: skip
    client = app.test_client()
    headers = {"service": service_headers, "ops": ops_headers}
    a = funded_with_limit(client, headers, wallet_factory, worker, "10.00", "100.00")
    accepted: list[str] = []
    patches: list[tuple[str, int, str | None]] = []
    threads = ClientThreads()
    withdrawal = {"type": "withdrawal", "amount": "2.00", "currency": "SGD",
                  "source_wallet_id": a}  # fmt: skip
    debit_concurrently(app.test_client(), service_headers, [withdrawal] * 60, threads, accepted)

    def lower() -> None:
        ops = app.test_client()
        for limit in ("90.00", "80.00", "70.00", "60.00", "50.00", "40.00", "30.00", "20.00"):
            response = ops.patch(
                f"/v1/wallets/{a}", json={"overdraft_limit": limit}, headers=ops_headers
            )
            assert response.status_code in (200, 409), response.get_json()
            patches.append((limit, response.status_code, response.get_json().get("code")))

    threads.start(lower)
    threads.join()
    result = wait_terminal(accepted, context=worker.log())
    codes = {r["failure_code"] for r in result.values() if r["status"] == "failed"}
    assert codes <= {"insufficient_funds"}, codes  # never retries_exhausted: no check violated
    assert all(code in (None, "overdraft_in_use") for _, _, code in patches), patches
    body = client.get(f"/v1/wallets/{a}", headers=service_headers).get_json()
    limit_minor = round(float(body["overdraft_limit"]) * 100)
    completed = sum(r["status"] == "completed" for r in result.values())
    assert balance_minor(a) == 1_000 - 200 * completed >= -limit_minor
    # The last limit accepted is the wallet's, and it covers what the wallet uses.
    accepted_limits = [limit for limit, status, _ in patches if status == 200]
    assert body["overdraft_limit"] == (accepted_limits[-1] if accepted_limits else "100.00")
    assert_ledger_consistent()
