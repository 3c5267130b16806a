"""Every operation the API serves has a client method, on ``Tally`` and on ``AsyncTally``.

``CLIENT_METHODS`` maps each operation of the served OpenAPI document (its
method and path) to the client method that calls it; an operation the API
adds without a client method fails here, as does a method that is gone, or
one that sends another method or path than its operation's (checked on a
transport that records the request and sends nothing).
"""

from __future__ import annotations

import operator
import re
import uuid
from typing import Any

import httpx
import pytest
from tally_client import AsyncTally, Tally, TallyConnectionError

from tests.client.conftest import run_in_own_loop

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
    ("POST", "/v1/transactions/{transaction_id}/cancel"): "transactions.cancel",
    ("POST", "/v1/transactions/{transaction_id}/retry"): "transactions.retry",
    ("POST", "/v1/transactions/retry"): "transactions.retry_failed",
    ("POST", "/v1/balance-monitors"): "balance_monitors.create",
    ("GET", "/v1/balance-monitors"): "balance_monitors.list",
    ("GET", "/v1/balance-monitors/{monitor_id}"): "balance_monitors.get",
    ("DELETE", "/v1/balance-monitors/{monitor_id}"): "balance_monitors.delete",
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
        run_in_own_loop(client.aclose)
    else:
        client.close()


class _Sent(httpx.TransportError):
    """Raised by the recording transport once it has a request: nothing goes on the wire."""


#: Arguments for the methods that take some; the rest are called without.
ID = uuid.uuid4()
ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "wallets.create": (("owner", "SGD"), {}),
    "wallets.update": ((ID,), {"status": "frozen"}),
    "transactions.deposit": (("1.00", "SGD", ID), {}),
    "transactions.withdraw": (("1.00", "SGD", ID), {}),
    "transactions.transfer": (("1.00", "SGD", ID, ID), {}),
    "transactions.hold": (("1.00", "SGD", ID), {}),
    "transactions.group": (([],), {}),
    "transactions.submit_batch": (([],), {}),
    "balance_monitors.create": ((ID, "balance", "lt", "1.00"), {}),
    "webhook_endpoints.create": (("http://127.0.0.1:9/",), {}),
    "webhook_endpoints.update": ((ID,), {"status": "disabled"}),
}
#: Methods whose first argument is the path's id.
BY_ID = ("get", "entries", "balance_at", "capture", "void", "reverse", "cancel", "retry",
         "delete", "deliveries", "retry_delivery")  # fmt: skip


def _request_of(name: str) -> tuple[str, str]:
    """Return the method and path ``Tally``'s method ``name`` sends (nothing reaches a server)."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise _Sent("recorded", request=request)

    with Tally("http://tally.invalid", "key", max_retries=0, transport=httpx.MockTransport(record)) as client:  # fmt: skip
        args, kwargs = ARGUMENTS.get(name, ((ID,) if name.endswith(BY_ID) else (), {}))
        with pytest.raises(TallyConnectionError):
            result = operator.attrgetter(name)(client)(*args, **kwargs)
            list(result)  # a list sends only when it is read
    return sent[0].method, sent[0].url.path


@pytest.mark.parametrize(("operation", "name"), sorted(CLIENT_METHODS.items()))
def test_each_method_sends_its_operation(operation: tuple[str, str], name: str) -> None:
    method, path = operation
    pattern = re.sub(r"\\{[a-z_]+\\}", "[0-9a-f-]{36}", re.escape(path))
    sent_method, sent_path = _request_of(name)
    assert sent_method == method and re.fullmatch(pattern, sent_path), (sent_method, sent_path)


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_each_submission_sends_post_v1_transactions(name: str) -> None:
    assert _request_of(f"transactions.{name}") == ("POST", "/v1/transactions")
