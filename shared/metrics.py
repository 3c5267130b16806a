"""Prometheus metrics shared by the API and the worker (prometheus-client).

When ``PROMETHEUS_MULTIPROC_DIR`` is set before a process starts (``tally up``
sets it to ``.tally/metrics``), every process, the worker's pool included,
writes its counts there and the API's ``/metrics`` sums them
(prometheus-client, "Multiprocess Mode"); otherwise each process counts alone.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSACTIONS_SETTLED = Counter(
    "tally_transactions_settled_total",
    "Transactions that left pending, by the status they reached.",
    ["status"],
)
RETRIES_EXHAUSTED = Counter(
    "tally_retries_exhausted_total",
    "Transactions failed with retries_exhausted (each also logged at ERROR).",
)
PUBLISH_FAILURES = Counter(
    "tally_publish_failures_total",
    "Broker publishes that failed after commit; the sweep re-publishes them.",
)

# Notifications (docs/webhooks.md).
EVENTS_RECORDED = Counter(
    "tally_events_total",
    "Events appended to the outbox, by type.",
    ["type"],
)
WEBHOOK_DELIVERIES = Counter(
    "tally_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: succeeded, retrying (failed, tried again later), "
    "failed (retries ended; each also logged at ERROR).",
    ["outcome"],
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "tally_webhook_endpoints_disabled_total",
    "Endpoints disabled because every delivery failed for TALLY_WEBHOOK_DISABLE_AFTER_SECONDS.",
)
#: Set by the delivery sweep; the most recent value of any process is the one served.
WEBHOOK_UNDELIVERED_AGE = Gauge(
    "tally_webhook_undelivered_age_seconds_max",
    "Age of the oldest pending delivery to an enabled endpoint, in seconds (0: none).",
    multiprocess_mode="mostrecent",
)
