"""Every API call the clients make, built once as a :class:`~tally_client._core.Call`.

Each function returns the call for one operation of the API's OpenAPI
document (docs/openapi.yaml); list operations return a function of the
cursor, so the clients can follow ``next_cursor`` page by page. Bodies follow
docs/api-conventions.md: amounts as decimal strings in major units, optional
fields left out rather than sent as null (the API refuses unknown fields, and
``null`` is not always a value).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from tally_client._core import Amount, Call, format_amount, jsonable, new_idempotency_key
from tally_client.errors import WaitTimeoutError
from tally_client.models import (
    AuditEvent,
    Balance,
    BalanceMonitor,
    BatchResult,
    BatchResults,
    BulkRetryResult,
    Event,
    Health,
    LedgerEntry,
    OpsOverview,
    Page,
    Readiness,
    ReconciliationRun,
    ReconciliationStarted,
    Transaction,
    Wallet,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
)

Id = uuid.UUID | str
T = TypeVar("T")

#: A page call: given a cursor (None for the first page), the call that reads that page.
Pages = Callable[[str | None], Call[Page[T]]]
#: A multi-step call: yields the calls to send, receives their results, returns the outcome.
Steps = Generator[Call[T], T, T]

#: The longest ``?wait=`` the API accepts, in seconds (docs/api-conventions.md, "Transactions").
WAIT_SECONDS_MAX = 30.0
#: How often a wait reads a ``scheduled`` transaction once its time has come, in seconds
#: (the API's long-poll answers at once for it; beat releases it within a few seconds).
SCHEDULED_POLL_SECONDS = 1.0


def _aware(name: str, value: dt.datetime | None) -> dt.datetime | None:
    """Return ``value`` if it is None or timezone-aware.

    Raises:
        ValueError: ``value`` is naive (the API would answer 422 naming ``name``).
    """
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone (e.g. datetime.now(UTC))")
    return value


def _pages(path: str, model: type[Any], limit: int | None, **filters: Any) -> Pages[Any]:
    """Return the page calls of the list at ``path``: ``limit`` per page, ``filters`` as query."""

    def page(cursor: str | None) -> Call[Page[Any]]:
        return Call.of(
            "GET",
            path,
            Page[model],  # type: ignore[valid-type]
            params={**filters, "limit": limit, "cursor": cursor},
        )

    return page


# Wallets ----------------------------------------------------------------------------------------


def create_wallet(owner_ref: str, currency: str) -> Call[Wallet]:
    """``POST /v1/wallets``. Not idempotent: a replay may answer ``409 wallet_exists``."""
    body = {"owner_ref": owner_ref, "currency": currency}
    return Call.of("POST", "/v1/wallets", Wallet, body=body, idempotent=False)


def get_wallet(wallet_id: Id) -> Call[Wallet]:
    """``GET /v1/wallets/{id}``."""
    return Call.of("GET", f"/v1/wallets/{wallet_id}", Wallet)


def list_wallets(owner_ref: str | None, limit: int | None) -> Pages[Wallet]:
    """``GET /v1/wallets?owner_ref``, newest first."""
    return _pages("/v1/wallets", Wallet, limit, owner_ref=owner_ref)


def update_wallet(
    wallet_id: Id, status: str | None, overdraft_limit: Amount | None
) -> Call[Wallet]:
    """``PATCH /v1/wallets/{id}`` (ops): ``status`` ``frozen`` or ``active``, and/or the
    ``overdraft_limit`` (major units); setting either twice is harmless."""
    body: dict[str, Any] = {}
    if status is not None:
        body["status"] = status
    if overdraft_limit is not None:
        body["overdraft_limit"] = format_amount(overdraft_limit)
    return Call.of("PATCH", f"/v1/wallets/{wallet_id}", Wallet, body=body)


def list_entries(wallet_id: Id, limit: int | None) -> Pages[LedgerEntry]:
    """``GET /v1/wallets/{id}/entries``, newest first."""
    return _pages(f"/v1/wallets/{wallet_id}/entries", LedgerEntry, limit)


def balance_at(wallet_id: Id, as_of: dt.datetime | None) -> Call[Balance]:
    """``GET /v1/wallets/{id}/balance?as_of``; ``as_of`` must be timezone-aware.

    Raises:
        ValueError: ``as_of`` is naive (the API would answer 422).
    """
    params = {"as_of": _aware("as_of", as_of)}
    return Call.of("GET", f"/v1/wallets/{wallet_id}/balance", Balance, params=params)


# Transactions -----------------------------------------------------------------------------------


def _keyed(key: str | None) -> dict[str, str]:
    """Return the ``Idempotency-Key`` header: ``key``, or a fresh one kept for every retry."""
    return {"Idempotency-Key": key or new_idempotency_key()}


def _optional(description: str | None, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """Return the optional fields every submission accepts, those given only."""
    fields: dict[str, Any] = {}
    if description is not None:
        fields["description"] = description
    if metadata is not None:
        fields["metadata"] = dict(metadata)
    return fields


def submission_body(
    type_: str,
    *,
    amount: Amount | None = None,
    currency: str | None = None,
    source_wallet_id: Id | None = None,
    destination_wallet_id: Id | None = None,
    legs: Sequence[Mapping[str, Any]] | None = None,
    expires_in: int | None = None,
    scheduled_at: dt.datetime | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return the body of ``POST /v1/transactions`` for a ``type_`` transaction.

    Only the fields given are sent; amounts become decimal strings in major units,
    ``scheduled_at`` an RFC 3339 time with its offset.

    Raises:
        ValueError: ``scheduled_at`` is naive (the API would answer 422).
    """
    body: dict[str, Any] = {"type": type_}
    if amount is not None:
        body["amount"] = format_amount(amount)
    for name, value in (
        ("currency", currency),
        ("source_wallet_id", source_wallet_id),
        ("destination_wallet_id", destination_wallet_id),
        ("expires_in", expires_in),
        ("scheduled_at", _aware("scheduled_at", scheduled_at)),
    ):
        if value is not None:
            body[name] = jsonable(value)
    if legs is not None:
        body["legs"] = [jsonable(leg) for leg in legs]
    return body | _optional(description, metadata)


def submit(body: Mapping[str, Any], idempotency_key: str | None) -> Call[Transaction]:
    """``POST /v1/transactions`` with an idempotency key: retried safely with the same key."""
    return Call.of(
        "POST", "/v1/transactions", Transaction, body=dict(body), headers=_keyed(idempotency_key)
    )


def capture(
    hold_id: Id,
    amount: Amount | None,
    destination_wallet_id: Id | None,
    idempotency_key: str | None,
) -> Call[Transaction]:
    """``POST /v1/transactions/{id}/capture``: the whole hold unless ``amount``."""
    body: dict[str, Any] = {}
    if amount is not None:
        body["amount"] = format_amount(amount)
    if destination_wallet_id is not None:
        body["destination_wallet_id"] = str(destination_wallet_id)
    return Call.of(
        "POST",
        f"/v1/transactions/{hold_id}/capture",
        Transaction,
        body=body,
        headers=_keyed(idempotency_key),
    )


def void(hold_id: Id, idempotency_key: str | None) -> Call[Transaction]:
    """``POST /v1/transactions/{id}/void``."""
    return Call.of(
        "POST",
        f"/v1/transactions/{hold_id}/void",
        Transaction,
        body={},
        headers=_keyed(idempotency_key),
    )


def reverse(
    transaction_id: Id,
    amount: Amount | None,
    description: str | None,
    metadata: Mapping[str, str] | None,
    idempotency_key: str | None,
) -> Call[Transaction]:
    """``POST /v1/transactions/{id}/reverse``: all that is left to reverse unless ``amount``."""
    body = _optional(description, metadata)
    if amount is not None:
        body["amount"] = format_amount(amount)
    return Call.of(
        "POST",
        f"/v1/transactions/{transaction_id}/reverse",
        Transaction,
        body=body,
        headers=_keyed(idempotency_key),
    )


def cancel(transaction_id: Id) -> Call[Transaction]:
    """``POST /v1/transactions/{id}/cancel``: a ``scheduled`` transaction becomes ``canceled``.
    A replay of a cancel that was applied answers ``409 not_cancelable``, so it is resent
    only if the API cannot have acted."""
    return Call.of(
        "POST", f"/v1/transactions/{transaction_id}/cancel", Transaction, body={}, idempotent=False
    )


def submit_batch(items: Sequence[Mapping[str, Any]]) -> Call[list[BatchResult]]:
    """``POST /v1/transactions/batch``: each item keyed (its own key, or a fresh one).

    The keys are chosen here, once, so a retried batch replays every item it
    recorded the first time.
    """
    keyed = [
        {**jsonable(item), "idempotency_key": item.get("idempotency_key") or new_idempotency_key()}
        for item in items
    ]

    def read(response: httpx.Response) -> list[BatchResult]:
        return BatchResults.model_validate_json(response.content).data

    return Call("POST", "/v1/transactions/batch", read, body={"transactions": keyed})


def get_transaction(
    transaction_id: Id, wait_seconds: float | None, pause_seconds: float = 0.0
) -> Call[Transaction]:
    """``GET /v1/transactions/{id}[?wait=N]``: with ``wait``, answers once it is not pending
    or after ``wait_seconds`` (at most 30); sent after ``pause_seconds``."""
    if wait_seconds is None:
        return Call.of(
            "GET", f"/v1/transactions/{transaction_id}", Transaction, pause_seconds=pause_seconds
        )
    wait_seconds = max(0.0, min(WAIT_SECONDS_MAX, wait_seconds))
    return Call.of(
        "GET",
        f"/v1/transactions/{transaction_id}",
        Transaction,
        params={"wait": f"{wait_seconds:.3f}"},
        extra_timeout_seconds=wait_seconds,
        pause_seconds=pause_seconds,
    )


def scheduled_pause_seconds(transaction: Transaction, left_seconds: float) -> float:
    """Return how long a wait pauses before reading ``transaction`` again, in seconds.

    Zero for a ``pending`` one (the long-poll holds it). A ``scheduled`` one is not held
    by the API, so the wait sleeps until its ``scheduled_at`` (at most 30 s at a time, to
    see a cancel), then reads it every second until beat releases it; never past
    ``left_seconds``, the time the wait has left.
    """
    if transaction.status != "scheduled":
        return 0.0
    due_in = SCHEDULED_POLL_SECONDS
    if transaction.scheduled_at is not None:
        due_in = (transaction.scheduled_at - dt.datetime.now(dt.UTC)).total_seconds()
    pause = min(max(due_in, SCHEDULED_POLL_SECONDS), WAIT_SECONDS_MAX)
    return max(0.0, min(pause, left_seconds))


def wait_steps(transaction_id: Id, timeout_seconds: float) -> Steps[Transaction]:
    """Read a transaction until it is applied or canceled (``held`` counts), or the timeout.

    Each step asks ``GET /v1/transactions/{id}?wait=N`` with N the time left (at most 30 s);
    while it is ``scheduled``, after a pause (:func:`scheduled_pause_seconds`).

    Raises:
        WaitTimeoutError: still ``scheduled`` or ``pending`` after ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    pause = 0.0
    while True:
        left = deadline - time.monotonic()
        transaction = yield get_transaction(transaction_id, left - pause, pause)
        if transaction.is_settled:
            return transaction
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(transaction, timeout_seconds)
        pause = scheduled_pause_seconds(transaction, deadline - time.monotonic())


def list_transactions(
    status: str | None,
    type_: str | None,
    wallet_id: Id | None,
    metadata: Mapping[str, str] | None,
    limit: int | None,
) -> Pages[Transaction]:
    """``GET /v1/transactions?status&type&wallet_id&metadata[KEY]=VALUE``, newest first.

    Every ``metadata`` pair must match exactly (docs/api-conventions.md).
    """
    pairs = {f"metadata[{key}]": value for key, value in (metadata or {}).items()}
    return _pages(
        "/v1/transactions",
        Transaction,
        limit,
        status=status,
        type=type_,
        wallet_id=wallet_id,
        **pairs,
    )


def retry(transaction_id: Id) -> Call[Transaction]:
    """``POST /v1/transactions/{id}/retry`` (ops). A replay of a retry that was applied answers
    ``409 not_retryable``, so it is resent only if the API cannot have acted."""
    return Call.of(
        "POST", f"/v1/transactions/{transaction_id}/retry", Transaction, idempotent=False
    )


def retry_failed(filters: Mapping[str, Any]) -> Call[BulkRetryResult]:
    """``POST /v1/transactions/retry`` (ops): retry the failed transactions ``filters`` select."""
    return Call.of(
        "POST",
        "/v1/transactions/retry",
        BulkRetryResult,
        body=jsonable(filters),
        idempotent=bool(filters.get("dry_run")),
    )


# Balance monitors -------------------------------------------------------------------------------


def create_balance_monitor(
    wallet_id: Id, field: str, operator: str, value: Amount, description: str | None
) -> Call[BalanceMonitor]:
    """``POST /v1/balance-monitors``. Not idempotent: a replay creates a second monitor."""
    body = {"wallet_id": str(wallet_id), "field": field, "operator": operator}
    body["value"] = format_amount(value)
    if description is not None:
        body["description"] = description
    return Call.of("POST", "/v1/balance-monitors", BalanceMonitor, body=body, idempotent=False)


def get_balance_monitor(monitor_id: Id) -> Call[BalanceMonitor]:
    """``GET /v1/balance-monitors/{id}``."""
    return Call.of("GET", f"/v1/balance-monitors/{monitor_id}", BalanceMonitor)


def list_balance_monitors(wallet_id: Id | None, limit: int | None) -> Pages[BalanceMonitor]:
    """``GET /v1/balance-monitors?wallet_id``, newest first."""
    return _pages("/v1/balance-monitors", BalanceMonitor, limit, wallet_id=wallet_id)


def delete_balance_monitor(monitor_id: Id) -> Call[None]:
    """``DELETE /v1/balance-monitors/{id}``: ``204``. A replay answers ``404``."""
    return Call(
        "DELETE", f"/v1/balance-monitors/{monitor_id}", lambda response: None, idempotent=False
    )


# Operations, notifications, meta ----------------------------------------------------------------


def start_reconciliation() -> Call[ReconciliationStarted]:
    """``POST /v1/reconciliations`` (ops). Not idempotent: a replay starts another run."""
    return Call.of("POST", "/v1/reconciliations", ReconciliationStarted, idempotent=False)


def get_reconciliation(run_id: Id) -> Call[ReconciliationRun]:
    """``GET /v1/reconciliations/{id}`` (ops)."""
    return Call.of("GET", f"/v1/reconciliations/{run_id}", ReconciliationRun)


def list_reconciliations(limit: int | None) -> Pages[ReconciliationRun]:
    """``GET /v1/reconciliations`` (ops), newest first."""
    return _pages("/v1/reconciliations", ReconciliationRun, limit)


def create_webhook_endpoint(
    url: str, events: Sequence[str] | None, description: str | None
) -> Call[WebhookEndpointCreated]:
    """``POST /v1/webhook-endpoints`` (ops); the answer alone carries the secret."""
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = list(events)
    if description is not None:
        body["description"] = description
    return Call.of(
        "POST", "/v1/webhook-endpoints", WebhookEndpointCreated, body=body, idempotent=False
    )


def get_webhook_endpoint(endpoint_id: Id) -> Call[WebhookEndpoint]:
    """``GET /v1/webhook-endpoints/{id}`` (ops)."""
    return Call.of("GET", f"/v1/webhook-endpoints/{endpoint_id}", WebhookEndpoint)


def list_webhook_endpoints(limit: int | None) -> Pages[WebhookEndpoint]:
    """``GET /v1/webhook-endpoints`` (ops), newest first."""
    return _pages("/v1/webhook-endpoints", WebhookEndpoint, limit)


def update_webhook_endpoint(
    endpoint_id: Id, status: str | None, events: Sequence[str] | None, url: str | None
) -> Call[WebhookEndpoint]:
    """``PATCH /v1/webhook-endpoints/{id}`` (ops): the fields given only."""
    body = jsonable({"status": status, "events": events, "url": url})
    return Call.of("PATCH", f"/v1/webhook-endpoints/{endpoint_id}", WebhookEndpoint, body=body)


def delete_webhook_endpoint(endpoint_id: Id) -> Call[None]:
    """``DELETE /v1/webhook-endpoints/{id}`` (ops): ``204``. A replay answers ``404``."""
    return Call(
        "DELETE", f"/v1/webhook-endpoints/{endpoint_id}", lambda response: None, idempotent=False
    )


def list_webhook_deliveries(
    endpoint_id: Id, status: str | None, limit: int | None
) -> Pages[WebhookDelivery]:
    """``GET /v1/webhook-endpoints/{id}/deliveries?status`` (ops), newest first."""
    return _pages(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", WebhookDelivery, limit, status=status
    )


def retry_webhook_delivery(delivery_id: Id) -> Call[WebhookDelivery]:
    """``POST /v1/webhook-deliveries/{id}/retry`` (ops): deliver again now."""
    return Call.of(
        "POST", f"/v1/webhook-deliveries/{delivery_id}/retry", WebhookDelivery, idempotent=False
    )


def list_events(type_: str | None, transaction_id: Id | None, limit: int | None) -> Pages[Event]:
    """``GET /v1/events?type&transaction_id``, newest first."""
    return _pages("/v1/events", Event, limit, type=type_, transaction_id=transaction_id)


def list_audit_events(
    action: str | None, target_id: Id | None, limit: int | None
) -> Pages[AuditEvent]:
    """``GET /v1/audit-events?action&target_id`` (ops), newest first."""
    return _pages("/v1/audit-events", AuditEvent, limit, action=action, target_id=target_id)


def ops_overview() -> Call[OpsOverview]:
    """``GET /v1/ops/overview`` (ops): the pending backlog and recent throughput."""
    return Call.of("GET", "/v1/ops/overview", OpsOverview)


def health() -> Call[Health]:
    """``GET /healthz``: the process is up."""
    return Call.of("GET", "/healthz", Health)


def readiness() -> Call[Readiness]:
    """``GET /readyz``: ``503`` with the same body when PostgreSQL or Redis does not answer."""
    return Call.of("GET", "/readyz", Readiness, accept=frozenset({503}))


def metrics() -> Call[str]:
    """``GET /metrics``: Prometheus's text format."""
    return Call("GET", "/metrics", lambda response: response.text)


def openapi() -> Call[dict[str, Any]]:
    """``GET /openapi.json``: the OpenAPI 3.1 document the API serves."""
    return Call.of("GET", "/openapi.json", dict[str, Any])
