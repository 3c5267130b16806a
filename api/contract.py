"""The route table of the OpenAPI document: one ``Operation`` per Flask endpoint.

``OPERATIONS`` names, for each endpoint of the app (``blueprint.function``),
the pydantic models of its body, query and answers, its role, and the
problem statuses it can answer beyond those every route shares
(``api.openapi.EDGE_PROBLEMS``, and ``api.openapi.V1_PROBLEMS`` under ``/v1``).
``api.openapi`` turns it and ``app.url_map`` into the document;
tests/integration/test_openapi.py fails when an endpoint has no entry here, or
an entry no endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from api import events as ev
from api import monitors as mo
from api import responses as r
from api import schemas as s
from api import webhooks as wh

Role = Literal["none", "service", "ops"]


@dataclass(frozen=True)
class Answer:
    """A successful answer: status, description, body model (or a raw media type), links."""

    status: int
    description: str
    model: Any = None  # a pydantic model or TypeAdapter; None for no JSON body
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    example: Any = None


@dataclass(frozen=True)
class Operation:
    """How one endpoint is documented.

    Attributes:
        operation_id: the OpenAPI ``operationId`` (camelCase, unique).
        summary: one line; the view's docstring is the description.
        tag: the group it is listed under.
        answers: the successful answers.
        role: ``none`` (no key), ``service`` or ``ops`` (403 for a service key).
        body: the request body's model (or TypeAdapter); ``None`` for no body.
        body_required: whether a body must be sent.
        query: the query string's model.
        problems: problem statuses beyond the common ones, with the example code of each.
        idempotency_key: whether the ``Idempotency-Key`` header is required.
    """

    operation_id: str
    summary: str
    tag: str
    answers: tuple[Answer, ...]
    role: Role = "service"
    body: Any = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    problems: dict[int, str] = field(default_factory=dict)
    idempotency_key: bool = False


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


_TRANSACTION_LINKS = {
    "GetTransaction": _link("getTransaction", transaction_id="$response.body#/id"),
}
_ACCEPTED = (
    Answer(
        202,
        "Recorded as pending; poll the transaction at Location.",
        r.Transaction,
        headers=("Location", "Retry-After"),
        links=_TRANSACTION_LINKS,
    ),
    Answer(
        200,
        "The same Idempotency-Key and request again: the transaction as it is now.",
        r.Transaction,
        headers=("Location", "Idempotent-Replayed"),
        links=_TRANSACTION_LINKS,
    ),
)
_WALLET_LINKS = {
    "GetWallet": _link("getWallet", wallet_id="$response.body#/id"),
    "ListWalletEntries": _link("listWalletEntries", wallet_id="$response.body#/id"),
    "GetWalletBalance": _link("getWalletBalance", wallet_id="$response.body#/id"),
}
_TEXT = "text/plain"
_HTML = "text/html"

#: Every endpoint of the app, by Flask endpoint name.
OPERATIONS: dict[str, Operation] = {
    "health.healthz": Operation(
        "getHealth", "Liveness: 200 while the process is up", "Health",
        (Answer(200, "The process is up.", r.Health),), role="none",
    ),
    "health.readyz": Operation(
        "getReadiness", "Readiness: PostgreSQL and Redis answer", "Health",
        (Answer(200, "Both answer.", r.Readiness),
         Answer(503, "PostgreSQL or Redis does not answer.", r.Readiness,
                example={"status": "down", "checks": {"database": "ok", "broker": "down"}})),
        role="none",
    ),
    "health.metrics": Operation(
        "getMetrics", "Prometheus metrics, text format", "Health",
        (Answer(200, "Prometheus text exposition format 0.0.4.", media_type=_TEXT,
                example="tally_transactions_submitted_total{type=\"deposit\"} 12.0\n"),),
        role="none",
    ),
    "openapi.document": Operation(
        "getOpenApi", "This OpenAPI 3.1 document", "Meta",
        (Answer(200, "The document (the same as docs/openapi.yaml).",
                example={"openapi": "3.1.0"}),),
        role="none",
    ),
    "openapi.viewer": Operation(
        "getDocs", "An interactive viewer of this document (Swagger UI, served locally)", "Meta",
        (Answer(200, "An HTML page.", media_type=_HTML, example="<!doctype html>..."),),
        role="none",
    ),
    "dashboard.page": Operation(
        "getDashboard", "The ops dashboard (an HTML page on the JSON API)", "Meta",
        (Answer(200, "An HTML page.", media_type=_HTML, example="<!doctype html>..."),),
        role="none",
    ),
    "wallets.create_wallet": Operation(
        "createWallet", "Create a wallet", "Wallets",
        (Answer(201, "Created; the wallet is at Location.", r.Wallet, headers=("Location",),
                links=_WALLET_LINKS),),
        body=s.WalletCreate, problems={409: "wallet_exists"},
    ),
    "wallets.list_wallets": Operation(
        "listWallets", "List wallets, newest first", "Wallets",
        (Answer(200, "A page of wallets.", r.page_of(r.Wallet)),), query=s.WalletListQuery,
    ),
    "wallets.get_wallet": Operation(
        "getWallet", "Read a wallet", "Wallets", (Answer(200, "The wallet.", r.Wallet),),
        problems={404: "wallet_not_found"},
    ),
    "wallets.patch_wallet": Operation(
        "updateWallet", "Freeze or unfreeze a wallet, or set its overdraft limit (ops)",
        "Wallets", (Answer(200, "The wallet, with its new status and limit.", r.Wallet),),
        role="ops", body=s.WalletPatch,
        problems={404: "wallet_not_found", 409: "overdraft_in_use"},
    ),
    "wallets.list_entries": Operation(
        "listWalletEntries", "List a wallet's ledger entries, newest first", "Wallets",
        (Answer(200, "A page of ledger entries.", r.page_of(r.LedgerEntry)),),
        query=s.ListQuery, problems={404: "wallet_not_found"},
    ),
    "wallets.get_balance": Operation(
        "getWalletBalance", "Read a wallet's balance as of a time", "Wallets",
        (Answer(200, "The balance after every entry up to as_of.", r.Balance),),
        query=s.BalanceQuery, problems={404: "wallet_not_found"},
    ),
    "monitors.create_monitor": Operation(
        "createBalanceMonitor", "Create a balance monitor, evaluated at once", "Wallets",
        (Answer(201, "Created; the monitor is at Location.", r.BalanceMonitor,
                headers=("Location",),
                links={"GetBalanceMonitor": _link("getBalanceMonitor",
                                                  monitor_id="$response.body#/id")}),),
        body=mo.MonitorCreate, problems={404: "wallet_not_found"},
    ),
    "monitors.list_monitors": Operation(
        "listBalanceMonitors", "List balance monitors, newest first", "Wallets",
        (Answer(200, "A page of monitors.", r.page_of(r.BalanceMonitor)),),
        query=mo.MonitorListQuery,
    ),
    "monitors.get_monitor": Operation(
        "getBalanceMonitor", "Read a balance monitor", "Wallets",
        (Answer(200, "The monitor.", r.BalanceMonitor),),
        problems={404: "balance_monitor_not_found"},
    ),
    "monitors.delete_monitor": Operation(
        "deleteBalanceMonitor", "Delete a balance monitor (its events stay)", "Wallets",
        (Answer(204, "Deleted.", media_type=""),), problems={404: "balance_monitor_not_found"},
    ),
    "transactions.submit": Operation(
        "submitTransaction", "Submit a transaction (recorded pending, applied later)",
        "Transactions", _ACCEPTED, body=s.SUBMISSION, idempotency_key=True,
        problems={404: "wallet_not_found"},
    ),
    "transactions.submit_batch": Operation(
        "submitTransactionBatch", "Submit up to 1,000 transactions in one request and one commit",
        "Transactions",
        (Answer(200, "One result per item, in the items' order: 202 recorded, 200 replayed, "
                "or the item's own problem.", r.BatchResults),),
        body=s.BatchSubmission,
    ),
    "transactions.list_transactions": Operation(
        "listTransactions", "List transactions, newest first", "Transactions",
        (Answer(200, "A page of transactions.", r.page_of(r.Transaction)),),
        query=s.TransactionListQuery,
    ),
    "transactions.get_transaction": Operation(
        "getTransaction", "Read a transaction, optionally waiting while it is pending",
        "Transactions", (Answer(200, "The transaction.", r.Transaction),), query=s.WaitQuery,
        problems={404: "transaction_not_found"},
    ),
    "transactions.capture": Operation(
        "captureHold", "Capture a held amount (all, or part)", "Transactions", _ACCEPTED,
        body=s.CaptureBody, body_required=False, idempotency_key=True,
        problems={404: "transaction_not_found", 409: "hold_not_open"},
    ),
    "transactions.void": Operation(
        "voidHold", "Void a hold: release its funds", "Transactions", _ACCEPTED,
        body=s.VoidBody, body_required=False, idempotency_key=True,
        problems={404: "transaction_not_found", 409: "hold_not_open"},
    ),
    "transactions.reverse": Operation(
        "reverseTransaction", "Reverse a completed transaction (all that is left, or part)",
        "Transactions", _ACCEPTED, body=s.ReverseBody, body_required=False, idempotency_key=True,
        problems={404: "transaction_not_found", 409: "not_reversible"},
    ),
    "transactions.cancel": Operation(
        "cancelTransaction", "Cancel a scheduled transaction before it is due", "Transactions",
        (Answer(200, "The transaction, canceled: nothing moved.", r.Transaction),),
        body=s.CancelBody, body_required=False,
        problems={404: "transaction_not_found", 409: "not_cancelable"},
    ),
    "transactions.retry": Operation(
        "retryTransaction", "Move a failed transaction back to pending (ops)", "Operations",
        (Answer(202, "Pending again and enqueued.", r.Transaction,
                headers=("Location", "Retry-After"), links=_TRANSACTION_LINKS),),
        role="ops", problems={404: "transaction_not_found", 409: "not_retryable"},
    ),
    "transactions.retry_many": Operation(
        "retryTransactions", "Retry every failed transaction a filter selects (ops)",
        "Operations", (Answer(200, "What was selected (dry_run) or retried.", r.BulkRetryResult),),
        role="ops", body=s.BulkRetryBody, body_required=False,
    ),
    "reconciliations.start": Operation(
        "startReconciliation", "Start a reconciliation now (ops)", "Operations",
        (Answer(202, "Started; a worker runs it.", r.ReconciliationStarted, headers=("Location",),
                links={"GetReconciliation": _link("getReconciliation",
                                                  run_id="$response.body#/id")}),),
        role="ops",
    ),
    "reconciliations.list_runs": Operation(
        "listReconciliations", "List reconciliation runs, newest first (ops)", "Operations",
        (Answer(200, "A page of runs.", r.page_of(r.ReconciliationRun)),), role="ops",
        query=s.ListQuery,
    ),
    "reconciliations.get_run": Operation(
        "getReconciliation", "Read a reconciliation run (ops)", "Operations",
        (Answer(200, "The run.", r.ReconciliationRun),), role="ops",
        problems={404: "reconciliation_not_found"},
    ),
    "audit.list_events": Operation(
        "listAuditEvents", "List the audit log, newest first (ops)", "Operations",
        (Answer(200, "A page of audit events.", r.page_of(r.AuditEvent)),), role="ops",
        query=s.AuditEventListQuery,
    ),
    "dashboard.ops_overview": Operation(
        "getOpsOverview", "The pending backlog and recent throughput (ops)", "Operations",
        (Answer(200, "The overview.", TypeAdapter(dict[str, Any]),
                example={"pending": {"count": 0, "oldest_age_seconds": 0.0}, "throughput": []}),),
        role="ops",
    ),
    "events.list_all": Operation(
        "listEvents", "List events, newest first (a service key sees its own)", "Notifications",
        (Answer(200, "A page of events.", r.page_of(r.Event)),), query=ev.EventListQuery,
    ),
    "webhooks.create_endpoint": Operation(
        "createWebhookEndpoint", "Register a webhook endpoint (ops)", "Notifications",
        (Answer(201, "Registered; the secret is shown only here.", r.WebhookEndpointCreated,
                headers=("Location",),
                links={"GetWebhookEndpoint": _link("getWebhookEndpoint",
                                                   endpoint_id="$response.body#/id")}),),
        role="ops", body=wh.EndpointCreate,
    ),
    "webhooks.list_endpoints": Operation(
        "listWebhookEndpoints", "List webhook endpoints, newest first (ops)", "Notifications",
        (Answer(200, "A page of endpoints.", r.page_of(r.WebhookEndpoint)),), role="ops",
        query=s.ListQuery,
    ),
    "webhooks.get_endpoint": Operation(
        "getWebhookEndpoint", "Read a webhook endpoint (ops)", "Notifications",
        (Answer(200, "The endpoint.", r.WebhookEndpoint),), role="ops",
        problems={404: "webhook_endpoint_not_found"},
    ),
    "webhooks.update_endpoint": Operation(
        "updateWebhookEndpoint", "Enable, disable or change a webhook endpoint (ops)",
        "Notifications", (Answer(200, "The endpoint.", r.WebhookEndpoint),), role="ops",
        body=wh.EndpointPatch, problems={404: "webhook_endpoint_not_found"},
    ),
    "webhooks.delete_endpoint": Operation(
        "deleteWebhookEndpoint", "Delete a webhook endpoint and its deliveries (ops)",
        "Notifications", (Answer(204, "Deleted.", media_type=""),), role="ops",
        problems={404: "webhook_endpoint_not_found"},
    ),
    "webhooks.list_deliveries": Operation(
        "listWebhookDeliveries", "List an endpoint's deliveries, newest first (ops)",
        "Notifications", (Answer(200, "A page of deliveries.", r.page_of(r.WebhookDelivery)),),
        role="ops", query=wh.DeliveryListQuery, problems={404: "webhook_endpoint_not_found"},
    ),
    "webhooks.retry_delivery": Operation(
        "retryWebhookDelivery", "Deliver again now (ops)", "Notifications",
        (Answer(202, "Due at once.", r.WebhookDelivery),), role="ops",
        problems={404: "webhook_delivery_not_found", 409: "webhook_endpoint_disabled"},
    ),
}  # fmt: skip

#: Endpoints that serve files, not API calls: left out of the document on purpose.
UNDOCUMENTED_ENDPOINTS = frozenset({"static", "openapi.viewer_asset"})
