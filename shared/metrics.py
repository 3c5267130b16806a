"""Prometheus metrics shared by the API and the worker (prometheus-client).

The worker's pool processes write to ``PROMETHEUS_MULTIPROC_DIR`` when it is
set (prometheus-client's multiprocess mode), so ``/metrics`` can expose them.
"""

from __future__ import annotations

from prometheus_client import Counter

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
