"""The ops dashboard in a real headless Chromium, against the API as uvicorn serves it and a
real worker: sign in, find a failed transaction, retry it, watch it complete, open its wallet.

Screenshots go to tests/artifacts/ (dashboard-*.png) for a person to look at.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.pipeline


class Client:
    """A small HTTP client of the live API with one key."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        response = requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code in (200, 201, 202), response.text
        return dict(response.json())

    def settled(self, transaction_id: str) -> dict[str, Any]:
        """Long-poll a transaction until it leaves ``pending`` (at most a minute)."""
        deadline = time.monotonic() + 60
        while True:
            response = requests.get(
                f"{self.url}/v1/transactions/{transaction_id}?wait=10",
                headers=self.headers,
                timeout=30,
            )
            body = dict(response.json())
            if body["status"] != "pending":
                return body
            assert time.monotonic() < deadline, f"{transaction_id} still pending"


def test_dashboard_retries_a_failed_transaction_and_opens_its_wallet(
    browser: Any,
    live_api: str,
    worker: Any,
    service_headers: dict[str, str],
    ops_headers: dict[str, str],
) -> None:
    service = Client(live_api, service_headers)
    ops = Client(live_api, ops_headers)
    wallet = service.post(
        "/v1/wallets", {"owner_ref": f"browser-{uuid.uuid4()}", "currency": "SGD"}
    )
    wallet_id = wallet["id"]
    # A withdrawal from an empty wallet fails; a deposit then makes its retry succeed.
    withdrawal = service.post("/v1/transactions", {"type": "withdrawal", "amount": "25.00",
                              "currency": "SGD", "source_wallet_id": wallet_id})  # fmt: skip
    failed = service.settled(withdrawal["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    deposit = service.post("/v1/transactions", {"type": "deposit", "amount": "100.00",
                           "currency": "SGD", "destination_wallet_id": wallet_id})  # fmt: skip
    assert service.settled(deposit["id"])["status"] == "completed"
    hold = service.post("/v1/transactions", {"type": "hold", "amount": "10.00", "currency": "SGD",
                        "source_wallet_id": wallet_id, "expires_in": 3600})  # fmt: skip
    assert service.settled(hold["id"])["status"] == "held"
    service.post("/v1/balance-monitors", {"wallet_id": wallet_id, "field": "available_balance",
                 "operator": "lt", "value": "70.00", "description": "top up"})  # fmt: skip
    ops.post("/v1/reconciliations")
    ops_key = ops_headers["Authorization"].split(" ", 1)[1]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{live_api}/")
        page.wait_for_selector("#sign-in-form")
        page.screenshot(path=str(ARTIFACTS / "dashboard-1-sign-in.png"))

        # A service key is refused: the dashboard is for ops keys.
        page.fill("#ops-key", service_headers["Authorization"].split(" ", 1)[1])
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#sign-in-error:has-text('not an ops key')")

        page.fill("#ops-key", ops_key)
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#board:not([hidden])")
        row = page.locator(f"#failed tr[data-transaction='{withdrawal['id']}']")
        row.wait_for()
        assert "insufficient_funds" in row.inner_text()
        page.wait_for_selector("#reconciliations tbody tr")
        page.locator("#throughput .bar-wrap").nth(9).wait_for()  # ten minutes of throughput
        page.screenshot(path=str(ARTIFACTS / "dashboard-2-overview.png"), full_page=True)

        row.locator("button.retry").click()
        row.locator(".outcome .badge.completed").wait_for(timeout=90_000)
        row.screenshot(path=str(ARTIFACTS / "dashboard-3-retried-row.png"))
        page.screenshot(path=str(ARTIFACTS / "dashboard-3-retried.png"), full_page=True)
        assert service.settled(withdrawal["id"])["status"] == "completed"

        page.locator(f"#transactions button[data-wallet='{wallet_id}']").first.click()
        page.wait_for_selector("#wallet:not([hidden])")
        assert page.inner_text("#wallet-balance") == "75.00 SGD"
        assert page.inner_text("#wallet-available") == "65.00 SGD"
        assert page.inner_text("#wallet-held") == "10.00 SGD"
        assert page.locator("#wallet-holds tbody tr").count() == 1
        # Created at 90.00 available (clear); the retried withdrawal took it to 65.00.
        assert page.inner_text("#wallet-monitors tbody tr td:first-child") == "triggered"
        assert "available_balance < 70.00 SGD" in page.inner_text("#wallet-monitors tbody")
        assert page.locator("#wallet-entries tbody tr").count() == 2
        page.screenshot(path=str(ARTIFACTS / "dashboard-4-wallet.png"), full_page=True)

        # Filters: completed deposits only.
        page.select_option("#filter-status", "completed")
        page.select_option("#filter-type", "deposit")
        page.click("#filters button[type=submit]")
        # Polled from here: the page's policy forbids the eval behind wait_for_function.
        deadline = time.monotonic() + 30
        while True:
            rows = page.locator("#transactions tbody tr").all_inner_texts()
            if rows and all("deposit" in r and "completed" in r for r in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        page.click("#sign-out")
        page.wait_for_selector("#sign-in:not([hidden])")
        assert page.evaluate("sessionStorage.length") == 0
    finally:
        context.close()
    # The policy forbids inline script and other origins; nothing the page does broke it.
    assert not [e for e in errors if "Content Security Policy" in e], errors
