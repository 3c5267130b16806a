"""Prometheus metrics shared by the API and the worker (prometheus-client).

Each process counts in its own registry; ``/metrics`` serves the answering
API process's. Exposing the worker's counters needs prometheus-client's
multiprocess mode (a shared ``PROMETHEUS_MULTIPROC_DIR``), not set up yet.
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
