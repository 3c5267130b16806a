"""The client's surface, declared once for ``Tally`` and ``AsyncTally``.

Each method here only builds what to send (a ``Call``, the page calls of a
list, or the steps of a wait, all from ``_calls``); the descriptors
:class:`operation`, :class:`listing` and :class:`steps` hand that to the
client the resource belongs to. ``Tally`` sends and returns the result;
``AsyncTally`` returns an awaitable of it (lists: an async iterator). The
``Sync`` / ``Async`` parameter of each resource tells a type checker which.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from tally_client import _calls
from tally_client._calls import Id, Pages, Steps
from tally_client._core import Amount, Call, Core
from tally_client.models import (
    AuditEvent,
    Balance,
    BalanceMonitor,
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

P = ParamSpec("P")
T = TypeVar("T")
Metadata = Mapping[str, str]


class Sync:
    """Marks a resource of ``Tally``: its methods return results."""


class Async:
    """Marks a resource of ``AsyncTally``: its methods return awaitables (lists: async iterators)."""


M = TypeVar("M", Sync, Async)


class Resource(Generic[M]):
    """A group of methods of one client; ``_client`` sends what they build."""

    def __init__(self, client: Any) -> None:
        self._client = client


class _Bound(Generic[P, T]):
    """A method that builds something to send; bound, it hands that to ``_client.<runner>``."""

    runner = "send"

    def __init__(self, build: Callable[Concatenate[Any, P], T]) -> None:
        self._build = build
        self.__doc__, self.__wrapped__ = build.__doc__, build  # help() shows the method

    def _bind(self, resource: Resource[Any]) -> Callable[P, Any]:
        run = getattr(resource._client, self.runner)

        @functools.wraps(self._build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(self._build(resource, *args, **kwargs))

        return method


class operation(_Bound[P, Call[T]]):  # noqa: N801 (a decorator)
    """A method whose call is sent once (with its retries): the result, or its awaitable."""

    @overload
    def __get__(self, resource: Resource[Sync], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, resource: Resource[Async], owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, resource: Resource[Any], owner: type) -> Callable[P, Any]:
        return self._bind(resource)


# "Pages[T]" as a string: Page is a pydantic generic, so Pages[T] cannot be subscripted
# at run time; a type checker reads it all the same.
class listing(_Bound[P, "Pages[T]"]):  # noqa: N801 (a decorator)
    """A method that lists: an iterator over every item, page after page."""

    runner = "paginate"

    @overload
    def __get__(self, resource: Resource[Sync], owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, resource: Resource[Async], owner: type) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, resource: Resource[Any], owner: type) -> Callable[P, Any]:
        return self._bind(resource)


class steps(_Bound[P, Steps[T]]):  # noqa: N801 (a decorator)
    """A method of several calls, each decided by the last result (a wait)."""

    runner = "run_steps"

    @overload
    def __get__(self, resource: Resource[Sync], owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, resource: Resource[Async], owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, resource: Resource[Any], owner: type) -> Callable[P, Any]:
        return self._bind(resource)


class Meta(Resource[M]):
    """The calls outside a resource: health, readiness, metrics, the document, the overview."""

    @operation
    def health(self) -> Call[Health]:
        """Return ``GET /healthz``: the API process is up."""
        return _calls.health()

    @operation
    def readiness(self) -> Call[Readiness]:
        """Return ``GET /readyz``: whether PostgreSQL and Redis answer (``ok``/``down``)."""
        return _calls.readiness()

    @operation
    def metrics(self) -> Call[str]:
        """Return ``GET /metrics``: Prometheus's text format."""
        return _calls.metrics()

    @operation
    def openapi(self) -> Call[dict[str, Any]]:
        """Return ``GET /openapi.json``: the OpenAPI 3.1 document the API serves."""
        return _calls.openapi()

    @operation
    def ops_overview(self) -> Call[OpsOverview]:
        """Return ``GET /v1/ops/overview`` (ops): the pending backlog and recent throughput."""
        return _calls.ops_overview()


class Wallets(Resource[M]):
    """``/v1/wallets``: wallets, their ledger entries and balances."""

    @operation
    def create(self, owner_ref: str, currency: str) -> Call[Wallet]:
        """Create ``owner_ref``'s wallet in ``currency`` (``409 wallet_exists``: ConflictError)."""
        return _calls.create_wallet(owner_ref, currency)

    @operation
    def get(self, wallet_id: Id) -> Call[Wallet]:
        """Return a wallet (``404 wallet_not_found``: NotFoundError)."""
        return _calls.get_wallet(wallet_id)

    @listing
    def list(self, *, owner_ref: str | None = None, limit: int | None = None) -> Pages[Wallet]:
        """Iterate over wallets (of ``owner_ref``), newest first, ``limit`` (1..200) per page."""
        return _calls.list_wallets(owner_ref, limit)

    @operation
    def update(
        self,
        wallet_id: Id,
        *,
        status: str | None = None,
        overdraft_limit: Amount | None = None,
    ) -> Call[Wallet]:
        """Freeze (``frozen``) or unfreeze (``active``) a wallet, or set how far below zero
        its available balance may go (``overdraft_limit``, major units) (ops).

        Raises:
            ConflictError: ``overdraft_in_use``, a limit below what the wallet already uses.
        """
        return _calls.update_wallet(wallet_id, status, overdraft_limit)

    @listing
    def entries(self, wallet_id: Id, *, limit: int | None = None) -> Pages[LedgerEntry]:
        """Iterate over a wallet's ledger entries, newest first."""
        return _calls.list_entries(wallet_id, limit)

    @operation
    def balance_at(self, wallet_id: Id, as_of: dt.datetime | None = None) -> Call[Balance]:
        """Return the balance after every entry up to ``as_of`` (aware; default now)."""
        return _calls.balance_at(wallet_id, as_of)


class Transactions(Resource[M]):
    """``/v1/transactions``. Every submission carries an idempotency key: ``idempotency_key``,
    or a fresh UUID4 kept for the call's retries. It answers the transaction ``pending``
    (``202``), or as it is now on a replay of the same key and request. Amounts are
    Decimal, str or int in major units.

    Deposits, withdrawals, transfers and groups take ``scheduled_at``, an aware datetime
    at most 366 days ahead (sent RFC 3339): the transaction is answered ``scheduled`` and
    applied after that time, unless canceled first (:meth:`cancel`); a time not in the
    future applies at once. A naive one raises ``ValueError``; one too far ahead,
    ``UnprocessableError``."""

    @operation
    def deposit(
        self,
        amount: Amount,
        currency: str,
        destination_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        scheduled_at: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Deposit ``amount`` of ``currency`` into a wallet (at ``scheduled_at``: see the class)."""
        body = _calls.submission_body(
            "deposit", amount=amount, currency=currency,
            destination_wallet_id=destination_wallet_id, description=description,
            metadata=metadata, scheduled_at=scheduled_at,
        )  # fmt: skip
        return _calls.submit(body, idempotency_key)

    @operation
    def withdraw(
        self,
        amount: Amount,
        currency: str,
        source_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        scheduled_at: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Withdraw ``amount`` from a wallet; fails ``insufficient_funds`` when applied if short."""
        body = _calls.submission_body(
            "withdrawal", amount=amount, currency=currency, source_wallet_id=source_wallet_id,
            description=description, metadata=metadata, scheduled_at=scheduled_at,
        )  # fmt: skip
        return _calls.submit(body, idempotency_key)

    @operation
    def transfer(
        self,
        amount: Amount,
        currency: str,
        source_wallet_id: Id,
        destination_wallet_id: Id,
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        scheduled_at: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Transfer ``amount`` between two wallets of ``currency``."""
        body = _calls.submission_body(
            "transfer", amount=amount, currency=currency, source_wallet_id=source_wallet_id,
            destination_wallet_id=destination_wallet_id, description=description,
            metadata=metadata, scheduled_at=scheduled_at,
        )  # fmt: skip
        return _calls.submit(body, idempotency_key)

    @operation
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
    ) -> Call[Transaction]:
        """Reserve ``amount`` for ``expires_in`` seconds (default 7 days); ``held`` once applied."""
        body = _calls.submission_body(
            "hold", amount=amount, currency=currency, source_wallet_id=source_wallet_id,
            expires_in=expires_in, description=description, metadata=metadata,
        )  # fmt: skip
        return _calls.submit(body, idempotency_key)

    @operation
    def group(
        self,
        legs: Sequence[Mapping[str, Any]],
        *,
        description: str | None = None,
        metadata: Metadata | None = None,
        scheduled_at: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Apply 2..50 legs (``source_wallet_id``, ``destination_wallet_id``, ``amount``,
        ``currency``) all or none; a scheduled group is released or canceled as a whole."""
        body = _calls.submission_body(
            "group", legs=legs, description=description, metadata=metadata,
            scheduled_at=scheduled_at,
        )  # fmt: skip
        return _calls.submit(body, idempotency_key)

    @operation
    def capture(
        self,
        hold_id: Id,
        *,
        amount: Amount | None = None,
        destination_wallet_id: Id | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Capture a hold (all unless ``amount``) to a wallet (default: the system wallet)."""
        return _calls.capture(hold_id, amount, destination_wallet_id, idempotency_key)

    @operation
    def void(self, hold_id: Id, *, idempotency_key: str | None = None) -> Call[Transaction]:
        """Void a hold: its funds are released once applied (``409 hold_not_open`` if ended)."""
        return _calls.void(hold_id, idempotency_key)

    @operation
    def reverse(
        self,
        transaction_id: Id,
        *,
        amount: Amount | None = None,
        description: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Reverse a completed transaction, in full (default) or ``amount``: a new ``reversal``
        (``409 not_reversible`` if it cannot be)."""
        return _calls.reverse(transaction_id, amount, description, metadata, idempotency_key)

    @operation
    def cancel(self, transaction_id: Id) -> Call[Transaction]:
        """Cancel a ``scheduled`` transaction: answered ``canceled`` (terminal), nothing moved.

        Raises:
            ConflictError: ``not_cancelable``, the transaction is not ``scheduled`` (released,
                applied or canceled already).
            NotFoundError: ``transaction_not_found``.
        """
        return _calls.cancel(transaction_id)

    @operation
    def submit_batch(self, items: Sequence[Mapping[str, Any]]) -> Call[list[BatchResult]]:
        """Submit up to 1,000 transactions in one commit: one result per item, in order.

        Each item is a ``POST /v1/transactions`` body (``type``, ``amount``, ...,
        ``scheduled_at`` as an aware datetime); one without ``idempotency_key`` gets a
        fresh one, kept for retries.
        """
        return _calls.submit_batch(items)

    @operation
    def get(self, transaction_id: Id, *, wait: float | None = None) -> Call[Transaction]:
        """Return a transaction; with ``wait`` (0..30 s), once it is not pending or ``wait`` passed."""
        return _calls.get_transaction(transaction_id, wait)

    @listing
    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        wallet_id: Id | None = None,
        metadata: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> Pages[Transaction]:
        """Iterate over transactions, newest first, filtered by status, type, wallet and
        metadata (every pair must match exactly)."""
        return _calls.list_transactions(status, type, wallet_id, metadata, limit)

    @steps
    def wait(self, transaction_id: Id, timeout: float = 60.0) -> Steps[Transaction]:
        """Return the transaction once it is neither ``scheduled`` nor ``pending`` (a hold:
        ``held``; a canceled one: ``canceled``), long-polling (``?wait=``, 30 s at most per
        request) for up to ``timeout`` seconds. A ``scheduled`` one is read again at its
        ``scheduled_at`` (every 30 s at most before, every second after, until released).

        Raises:
            WaitTimeoutError: still ``scheduled`` or ``pending`` after ``timeout``; carries the
                last transaction read.
        """
        return _calls.wait_steps(transaction_id, timeout)

    @operation
    def retry(self, transaction_id: Id) -> Call[Transaction]:
        """Move a failed transaction back to pending (ops; ``409 not_retryable`` otherwise)."""
        return _calls.retry(transaction_id)

    @operation
    def retry_failed(
        self,
        *,
        failure_code: str | None = None,
        since: dt.datetime | None = None,
        wallet_id: Id | None = None,
        limit: int | None = None,
        dry_run: bool = False,
    ) -> Call[BulkRetryResult]:
        """Retry every failed transaction the filters select, all matching (ops): its
        ``failure_code``, failed at or after ``since`` (aware), touching ``wallet_id``, the
        oldest ``limit`` (1..10,000; default 1,000). ``dry_run`` only counts."""
        filters = {"failure_code": failure_code, "since": since, "wallet_id": wallet_id}
        return _calls.retry_failed(filters | {"limit": limit, "dry_run": dry_run})


class BalanceMonitors(Resource[M]):
    """``/v1/balance-monitors``: conditions on a wallet's balance, evaluated whenever it
    changes; a service key's monitor's events (``balance_monitor.triggered``,
    ``balance_monitor.cleared``) are listed by ``events.list``."""

    @operation
    def create(
        self,
        wallet_id: Id,
        field: str,
        operator: str,
        value: Amount,
        *,
        description: str | None = None,
    ) -> Call[BalanceMonitor]:
        """Watch a wallet's ``field`` (``balance`` or ``available_balance``) against ``value``
        (major units of its currency; zero or negative too) with ``operator`` (``lt``, ``lte``,
        ``gt``, ``gte``). Evaluated at once: ``triggered`` if the condition already holds.

        Raises:
            NotFoundError: ``wallet_not_found``.
            UnprocessableError: a ``value`` the wallet's currency cannot hold, another field
                or operator.
        """
        return _calls.create_balance_monitor(wallet_id, field, operator, value, description)

    @operation
    def get(self, monitor_id: Id) -> Call[BalanceMonitor]:
        """Return a monitor (``404 balance_monitor_not_found``: NotFoundError)."""
        return _calls.get_balance_monitor(monitor_id)

    @listing
    def list(
        self, *, wallet_id: Id | None = None, limit: int | None = None
    ) -> Pages[BalanceMonitor]:
        """Iterate over monitors (of ``wallet_id``), newest first, ``limit`` (1..200) per page."""
        return _calls.list_balance_monitors(wallet_id, limit)

    @operation
    def delete(self, monitor_id: Id) -> Call[None]:
        """Delete a monitor: it is evaluated no more; its events stay.

        Raises:
            NotFoundError: ``balance_monitor_not_found`` (also for a second delete).
        """
        return _calls.delete_balance_monitor(monitor_id)


class Reconciliations(Resource[M]):
    """``/v1/reconciliations`` (ops)."""

    @operation
    def start(self) -> Call[ReconciliationStarted]:
        """Start a reconciliation now; a worker runs it."""
        return _calls.start_reconciliation()

    @operation
    def get(self, run_id: Id) -> Call[ReconciliationRun]:
        """Return one run."""
        return _calls.get_reconciliation(run_id)

    @listing
    def list(self, *, limit: int | None = None) -> Pages[ReconciliationRun]:
        """Iterate over runs, newest first."""
        return _calls.list_reconciliations(limit)


class WebhookEndpoints(Resource[M]):
    """``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries`` (ops)."""

    @operation
    def create(
        self, url: str, *, events: Sequence[str] | None = None, description: str | None = None
    ) -> Call[WebhookEndpointCreated]:
        """Register an endpoint; the answer's ``secret`` is shown this once."""
        return _calls.create_webhook_endpoint(url, events, description)

    @operation
    def get(self, endpoint_id: Id) -> Call[WebhookEndpoint]:
        """Return one endpoint (without its secret)."""
        return _calls.get_webhook_endpoint(endpoint_id)

    @listing
    def list(self, *, limit: int | None = None) -> Pages[WebhookEndpoint]:
        """Iterate over endpoints, newest first."""
        return _calls.list_webhook_endpoints(limit)

    @operation
    def update(
        self,
        endpoint_id: Id,
        *,
        status: str | None = None,
        events: Sequence[str] | None = None,
        url: str | None = None,
    ) -> Call[WebhookEndpoint]:
        """Enable or disable an endpoint, or change its events or URL."""
        return _calls.update_webhook_endpoint(endpoint_id, status, events, url)

    @operation
    def delete(self, endpoint_id: Id) -> Call[None]:
        """Delete an endpoint and its deliveries."""
        return _calls.delete_webhook_endpoint(endpoint_id)

    @listing
    def deliveries(
        self, endpoint_id: Id, *, status: str | None = None, limit: int | None = None
    ) -> Pages[WebhookDelivery]:
        """Iterate over an endpoint's deliveries, newest first."""
        return _calls.list_webhook_deliveries(endpoint_id, status, limit)

    @operation
    def retry_delivery(self, delivery_id: Id) -> Call[WebhookDelivery]:
        """Deliver again now."""
        return _calls.retry_webhook_delivery(delivery_id)


class Events(Resource[M]):
    """``/v1/events``: a service key sees its own transactions' events, an ops key all."""

    @listing
    def list(
        self, *, type: str | None = None, transaction_id: Id | None = None, limit: int | None = None
    ) -> Pages[Event]:
        """Iterate over events, newest first."""
        return _calls.list_events(type, transaction_id, limit)


class AuditEvents(Resource[M]):
    """``/v1/audit-events`` (ops): operator actions."""

    @listing
    def list(
        self, *, action: str | None = None, target_id: Id | None = None, limit: int | None = None
    ) -> Pages[AuditEvent]:
        """Iterate over audit events, newest first."""
        return _calls.list_audit_events(action, target_id, limit)


class Client(Meta[M]):
    """What ``Tally`` and ``AsyncTally`` share: the core, the HTTP client and the resources.

    Args:
        core: base URL, key, timeout and retry policy.
        http: an ``httpx.Client`` or ``httpx.AsyncClient`` on ``core``'s base URL and headers.
    """

    wallets: Wallets[M]
    transactions: Transactions[M]
    balance_monitors: BalanceMonitors[M]
    reconciliations: Reconciliations[M]
    webhook_endpoints: WebhookEndpoints[M]
    events: Events[M]
    audit_events: AuditEvents[M]

    def __init__(self, core: Core, http: Any) -> None:
        super().__init__(self)
        self._core, self._http = core, http
        self.wallets, self.transactions = Wallets(self), Transactions(self)
        self.balance_monitors = BalanceMonitors(self)
        self.reconciliations = Reconciliations(self)
        self.webhook_endpoints = WebhookEndpoints(self)
        self.events, self.audit_events = Events(self), AuditEvents(self)
