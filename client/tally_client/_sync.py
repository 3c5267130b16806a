"""``Tally``: the synchronous client, on ``httpx.Client``.

It sends the calls ``_calls`` builds and sleeps between retries; every
decision (what to send, whether to retry, how to read the answer) is the
shared core's (``_core``), so ``AsyncTally`` behaves the same.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from tally_client import _calls
from tally_client._calls import Id, Pages
from tally_client._core import Amount, Call, Core
from tally_client.errors import TallyConnectionError, WaitTimeoutError
from tally_client.models import (
    AuditEvent,
    Balance,
    BatchResult,
    BulkRetryResult,
    Event,
    Health,
    LedgerEntry,
    OpsOverview,
    Readiness,
    ReconciliationRun,
    ReconciliationStarted,
    Transaction,
    Wallet,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
)

T = TypeVar("T")
Metadata = Mapping[str, str]


class Tally:
    """A synchronous client of one Tally API.

    Args:
        base_url: the API's origin, e.g. ``http://127.0.0.1:8000``.
        api_key: a ``service`` or ``ops`` key.
        timeout: seconds each attempt may take to connect, send or read
            (a long-poll adds its ``wait``).
        max_retries: retries after the first attempt of a call whose
            connection failed or that was answered ``429`` or ``503``.
        transport: an httpx transport to send through (default: HTTP over TCP).

    Use it as a context manager, or call :meth:`close`. Every method raises
    :class:`~tally_client.errors.APIError` (by status) for an error answer and
    :class:`~tally_client.errors.TallyConnectionError` when the API stayed
    unreachable.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = Core(base_url, api_key, timeout_seconds=timeout, max_retries=max_retries)
        self._http = httpx.Client(
            base_url=self._core.base_url, headers=self._core.headers, transport=transport
        )
        self.wallets = Wallets(self)
        self.transactions = Transactions(self)
        self.reconciliations = Reconciliations(self)
        self.webhook_endpoints = WebhookEndpoints(self)
        self.events = Events(self)
        self.audit_events = AuditEvents(self)

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the core's policy says; return its result.

        Raises:
            APIError: an error answer that is not retried, or the last one.
            TallyConnectionError: no answer after the last retry.
        """
        attempt = 0
        while True:
            try:
                response = self._http.send(
                    self._http.build_request(**self._core.request_options(call))
                )
            except httpx.TransportError as error:
                delay = self._core.policy.delay_seconds(call, attempt, error=error)
                if delay is None:
                    raise TallyConnectionError(f"{call.method} {call.path}: {error!r}") from error
            else:
                delay = self._core.policy.delay_seconds(call, attempt, response=response)
                if delay is None:
                    return self._core.result(call, response)
            attempt += 1
            time.sleep(delay)

    def paginate(self, pages: Pages) -> Iterator[Any]:
        """Yield every item of a list, page after page, following ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = self.send(pages(cursor))
            yield from page.data
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def health(self) -> Health:
        """Return ``GET /healthz``: the API process is up."""
        return self.send(_calls.health())

    def readiness(self) -> Readiness:
        """Return ``GET /readyz``: whether PostgreSQL and Redis answer (``status`` ``ok``/``down``)."""
        return self.send(_calls.readiness())

    def metrics(self) -> str:
        """Return ``GET /metrics``: Prometheus's text format."""
        return self.send(_calls.metrics())

    def openapi(self) -> dict[str, Any]:
        """Return ``GET /openapi.json``: the OpenAPI 3.1 document the API serves."""
        return self.send(_calls.openapi())

    def ops_overview(self) -> OpsOverview:
        """Return ``GET /v1/ops/overview`` (ops): the pending backlog and recent throughput."""
        return self.send(_calls.ops_overview())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Resource:
    def __init__(self, client: Tally) -> None:
        self._client = client


class Wallets(_Resource):
    """``/v1/wallets``: wallets, their ledger entries and balances."""

    def create(self, owner_ref: str, currency: str) -> Wallet:
        """Create ``owner_ref``'s wallet in ``currency`` (``409 wallet_exists``: ConflictError)."""
        return self._client.send(_calls.create_wallet(owner_ref, currency))

    def get(self, wallet_id: Id) -> Wallet:
        """Return a wallet (``404 wallet_not_found``: NotFoundError)."""
        return self._client.send(_calls.get_wallet(wallet_id))

    def list(self, *, owner_ref: str | None = None, limit: int | None = None) -> Iterator[Wallet]:
        """Iterate over wallets (of ``owner_ref``), newest first, ``limit`` (1..200) per page."""
        return self._client.paginate(_calls.list_wallets(owner_ref, limit))

    def update(self, wallet_id: Id, *, status: str) -> Wallet:
        """Freeze (``frozen``) or unfreeze (``active``) a wallet (ops)."""
        return self._client.send(_calls.update_wallet(wallet_id, status))

    def entries(self, wallet_id: Id, *, limit: int | None = None) -> Iterator[LedgerEntry]:
        """Iterate over a wallet's ledger entries, newest first."""
        return self._client.paginate(_calls.list_entries(wallet_id, limit))

    def balance_at(self, wallet_id: Id, as_of: dt.datetime | None = None) -> Balance:
        """Return the balance after every entry up to ``as_of`` (aware; default now)."""
        return self._client.send(_calls.balance_at(wallet_id, as_of))


class Transactions(_Resource):
    """``/v1/transactions``. Every submission carries an idempotency key: ``idempotency_key``,
    or a fresh UUID4 kept for the call's retries. It answers the transaction ``pending``
    (``202``), or as it is now on a replay of the same key and request."""

    def _submit(self, type_: str, key: str | None, **fields: Any) -> Transaction:
        return self._client.send(_calls.submit(_calls.submission_body(type_, **fields), key))

    def deposit(
        self,
        amount: Amount,
        currency: str,
        destination_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Deposit ``amount`` (major units) of ``currency`` into a wallet."""
        return self._submit(
            "deposit",
            idempotency_key,
            amount=amount,
            currency=currency,
            destination_wallet_id=destination_wallet_id,
            description=description,
            metadata=metadata,
        )

    def withdraw(
        self,
        amount: Amount,
        currency: str,
        source_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Withdraw ``amount`` from a wallet; fails ``insufficient_funds`` when applied if short."""
        return self._submit(
            "withdrawal",
            idempotency_key,
            amount=amount,
            currency=currency,
            source_wallet_id=source_wallet_id,
            description=description,
            metadata=metadata,
        )

    def transfer(
        self,
        amount: Amount,
        currency: str,
        source_wallet_id: Id,
        destination_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Transfer ``amount`` between two wallets of ``currency``."""
        return self._submit(
            "transfer",
            idempotency_key,
            amount=amount,
            currency=currency,
            source_wallet_id=source_wallet_id,
            destination_wallet_id=destination_wallet_id,
            description=description,
            metadata=metadata,
        )

    def hold(
        self,
        amount: Amount,
        currency: str,
        source_wallet_id: Id,
        *,
        expires_in: int | None = None,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Reserve ``amount`` for ``expires_in`` seconds (default 7 days); ``held`` once applied."""
        return self._submit(
            "hold",
            idempotency_key,
            amount=amount,
            currency=currency,
            source_wallet_id=source_wallet_id,
            expires_in=expires_in,
            description=description,
            metadata=metadata,
        )

    def group(
        self,
        legs: Sequence[Mapping[str, Any]],
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Apply 2..50 legs (``source_wallet_id``, ``destination_wallet_id``, ``amount``,
        ``currency``) all or none."""
        return self._submit(
            "group", idempotency_key, legs=legs, description=description, metadata=metadata
        )

    def capture(
        self,
        hold_id: Id,
        *,
        amount: Amount | None = None,
        destination_wallet_id: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Capture a hold (all unless ``amount``) to a wallet (default: the system wallet)."""
        return self._client.send(
            _calls.capture(hold_id, amount, destination_wallet_id, idempotency_key)
        )

    def void(self, hold_id: Id, *, idempotency_key: str | None = None) -> Transaction:
        """Void a hold: its funds are released once applied (``409 hold_not_open`` if ended)."""
        return self._client.send(_calls.void(hold_id, idempotency_key))

    def reverse(
        self,
        transaction_id: Id,
        *,
        amount: Amount | None = None,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Reverse a completed transaction, in full (default) or ``amount``: a new ``reversal``."""
        return self._client.send(
            _calls.reverse(transaction_id, amount, description, metadata, idempotency_key)
        )

    def submit_batch(self, items: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Submit up to 1,000 transactions in one commit: one result per item, in order.

        Each item is a ``POST /v1/transactions`` body (``type``, ``amount``, ...);
        one without ``idempotency_key`` gets a fresh one, kept for retries.
        """
        return self._client.send(_calls.submit_batch(items))

    def get(self, transaction_id: Id, *, wait: float | None = None) -> Transaction:
        """Return a transaction; with ``wait`` (0..30 s), once it is not pending or ``wait`` passed."""
        return self._client.send(_calls.get_transaction(transaction_id, wait))

    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        wallet_id: Id | None = None,
        limit: int | None = None,
    ) -> Iterator[Transaction]:
        """Iterate over transactions, newest first, filtered by status, type and wallet."""
        return self._client.paginate(_calls.list_transactions(status, type, wallet_id, limit))

    def wait(self, transaction_id: Id, timeout: float = 60.0) -> Transaction:
        """Return the transaction once it is not ``pending``, long-polling (``?wait=``, 30 s at most
        per request) until then.

        Raises:
            WaitTimeoutError: still pending after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            transaction = self.get(transaction_id, wait=deadline - time.monotonic())
            if transaction.is_settled:
                return transaction
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(transaction, timeout)

    def retry(self, transaction_id: Id) -> Transaction:
        """Move a failed transaction back to pending (ops; ``409 not_retryable`` otherwise)."""
        return self._client.send(_calls.retry(transaction_id))

    def retry_failed(self, **filters: Any) -> BulkRetryResult:
        """Retry every failed transaction the filters select (ops): ``failure_code``, ``since``
        (aware datetime), ``wallet_id``, ``limit``, ``dry_run``."""
        return self._client.send(_calls.retry_failed(filters))


class Reconciliations(_Resource):
    """``/v1/reconciliations`` (ops)."""

    def start(self) -> ReconciliationStarted:
        """Start a reconciliation now; a worker runs it."""
        return self._client.send(_calls.start_reconciliation())

    def get(self, run_id: Id) -> ReconciliationRun:
        """Return one run."""
        return self._client.send(_calls.get_reconciliation(run_id))

    def list(self, *, limit: int | None = None) -> Iterator[ReconciliationRun]:
        """Iterate over runs, newest first."""
        return self._client.paginate(_calls.list_reconciliations(limit))


class WebhookEndpoints(_Resource):
    """``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries`` (ops)."""

    def create(
        self, url: str, *, events: Sequence[str] | None = None, description: str | None = None
    ) -> WebhookEndpointCreated:
        """Register an endpoint; the answer's ``secret`` is shown this once."""
        return self._client.send(_calls.create_webhook_endpoint(url, events, description))

    def get(self, endpoint_id: Id) -> WebhookEndpoint:
        """Return one endpoint (without its secret)."""
        return self._client.send(_calls.get_webhook_endpoint(endpoint_id))

    def list(self, *, limit: int | None = None) -> Iterator[WebhookEndpoint]:
        """Iterate over endpoints, newest first."""
        return self._client.paginate(_calls.list_webhook_endpoints(limit))

    def update(
        self,
        endpoint_id: Id,
        *,
        status: str | None = None,
        events: Sequence[str] | None = None,
        url: str | None = None,
    ) -> WebhookEndpoint:
        """Enable or disable an endpoint, or change its events or URL."""
        return self._client.send(_calls.update_webhook_endpoint(endpoint_id, status, events, url))

    def delete(self, endpoint_id: Id) -> None:
        """Delete an endpoint and its deliveries."""
        self._client.send(_calls.delete_webhook_endpoint(endpoint_id))

    def deliveries(
        self, endpoint_id: Id, *, status: str | None = None, limit: int | None = None
    ) -> Iterator[WebhookDelivery]:
        """Iterate over an endpoint's deliveries, newest first."""
        return self._client.paginate(_calls.list_webhook_deliveries(endpoint_id, status, limit))

    def retry_delivery(self, delivery_id: Id) -> WebhookDelivery:
        """Deliver again now."""
        return self._client.send(_calls.retry_webhook_delivery(delivery_id))


class Events(_Resource):
    """``/v1/events``: a service key sees its own transactions' events, an ops key all."""

    def list(
        self, *, type: str | None = None, transaction_id: Id | None = None, limit: int | None = None
    ) -> Iterator[Event]:
        """Iterate over events, newest first."""
        return self._client.paginate(_calls.list_events(type, transaction_id, limit))


class AuditEvents(_Resource):
    """``/v1/audit-events`` (ops): operator actions."""

    def list(
        self, *, action: str | None = None, target_id: Id | None = None, limit: int | None = None
    ) -> Iterator[AuditEvent]:
        """Iterate over audit events, newest first."""
        return self._client.paginate(_calls.list_audit_events(action, target_id, limit))
