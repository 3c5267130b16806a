"""Every operation the API serves has a client method, on ``Tally`` and on ``AsyncTally``.

``CLIENT_METHODS`` maps each operation of the served OpenAPI document (its
method and path) to the client method that calls it; an operation the API
adds without a client method fails here, as does a method that is gone.
"""

from __future__ import annotations

import asyncio
import operator

import pytest
from tally_client import AsyncTally, Tally

pytestmark = pytest.mark.pipeline

CLIENT_METHODS = {
    ("POST", "/v1/wallets"): "wallets.create",
    ("GET", "/v1/wallets"): "wallets.list",
    ("GET", "/v1/wallets/{wallet_id}"): "wallets.get",
    ("PATCH", "/v1/wallets/{wallet_id}"): "wallets.update",
    ("GET", "/v1/wallets/{wallet_id}/entries"): "wallets.entries",
    ("GET", "/v1/wallets/{wallet_id}/balance"): "wallets.balance_at",
    # One operation, one method per transaction type (the body's ``type``).
    ("POST", "/v1/transactions"): "transactions.deposit",
    ("POST", "/v1/transactions/batch"): "transactions.submit_batch",
    ("GET", "/v1/transactions"): "transactions.list",
    ("GET", "/v1/transactions/{transaction_id}"): "transactions.get",
    ("POST", "/v1/transactions/{transaction_id}/capture"): "transactions.capture",
    ("POST", "/v1/transactions/{transaction_id}/void"): "transactions.void",
    ("POST", "/v1/transactions/{transaction_id}/reverse"): "transactions.reverse",
    ("POST", "/v1/transactions/{transaction_id}/retry"): "transactions.retry",
    ("POST", "/v1/transactions/retry"): "transactions.retry_failed",
    ("POST", "/v1/reconciliations"): "reconciliations.start",
    ("GET", "/v1/reconciliations"): "reconciliations.list",
    ("GET", "/v1/reconciliations/{run_id}"): "reconciliations.get",
    ("POST", "/v1/webhook-endpoints"): "webhook_endpoints.create",
    ("GET", "/v1/webhook-endpoints"): "webhook_endpoints.list",
    ("GET", "/v1/webhook-endpoints/{endpoint_id}"): "webhook_endpoints.get",
    ("PATCH", "/v1/webhook-endpoints/{endpoint_id}"): "webhook_endpoints.update",
    ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): "webhook_endpoints.delete",
    ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"): "webhook_endpoints.deliveries",
    ("POST", "/v1/webhook-deliveries/{delivery_id}/retry"): "webhook_endpoints.retry_delivery",
    ("GET", "/v1/events"): "events.list",
    ("GET", "/v1/audit-events"): "audit_events.list",
    ("GET", "/v1/ops/overview"): "ops_overview",
    ("GET", "/healthz"): "health",
    ("GET", "/readyz"): "readiness",
    ("GET", "/metrics"): "metrics",
    ("GET", "/openapi.json"): "openapi",
}

#: The same operation, by the other transaction types it submits.
SUBMISSIONS = ["deposit", "withdraw", "transfer", "hold", "group"]

#: Pages for a browser, not calls for a program.
BROWSER_PAGES = {("GET", "/"), ("GET", "/docs")}

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.mark.parametrize("client_class", [Tally, AsyncTally])
def test_every_served_operation_has_a_client_method(
    client_class: type, tally: Tally, api_url: str
) -> None:
    document = tally.openapi()
    served = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    missing = sorted(served - BROWSER_PAGES - set(CLIENT_METHODS))
    assert not missing, f"operations without a client method: {missing}"

    client = client_class(api_url, "unused")
    for (method, path), name in CLIENT_METHODS.items():
        assert callable(operator.attrgetter(name)(client)), (method, path, name)
    for name in SUBMISSIONS:
        assert callable(getattr(client.transactions, name)), name
    if isinstance(client, AsyncTally):
        asyncio.run(client.aclose())
    else:
        client.close()
