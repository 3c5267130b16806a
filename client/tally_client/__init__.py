"""The Python client of the Tally HTTP API (docs/client.md).

``Tally`` and ``AsyncTally`` share one request-building core: an
idempotency key per submission unless given, safe retries with the same key,
long-poll waits, pagination as iterators, typed models out, problem+json
errors as exceptions. ``tally_client.webhooks.verify`` checks a delivery's
Standard Webhooks signature and returns its event.
"""

from tally_client import webhooks
from tally_client._async import AsyncTally
from tally_client._sync import Tally
from tally_client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TallyConnectionError,
    TallyError,
    UnprocessableError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from tally_client.models import (
    TERMINAL_STATUSES,
    AuditEvent,
    Balance,
    BalanceMonitor,
    BalanceMonitorEvent,
    BatchResult,
    BulkRetryResult,
    Event,
    LedgerEntry,
    Leg,
    Problem,
    ReconciliationRun,
    Transaction,
    Wallet,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreated,
)

__all__ = [
    "TERMINAL_STATUSES",
    "APIError",
    "AsyncTally",
    "AuditEvent",
    "AuthenticationError",
    "BadRequestError",
    "Balance",
    "BalanceMonitor",
    "BalanceMonitorEvent",
    "BatchResult",
    "BulkRetryResult",
    "ConflictError",
    "Event",
    "LedgerEntry",
    "Leg",
    "NotFoundError",
    "PermissionDeniedError",
    "Problem",
    "RateLimitedError",
    "ReconciliationRun",
    "ServerError",
    "Tally",
    "TallyConnectionError",
    "TallyError",
    "Transaction",
    "UnprocessableError",
    "Wallet",
    "WaitTimeoutError",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointCreated",
    "WebhookVerificationError",
    "webhooks",
]
