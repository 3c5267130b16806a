"""Prometheus metrics shared by the API and the worker (prometheus-client).

When ``PROMETHEUS_MULTIPROC_DIR`` is set before a process starts (``tally up``
sets it to ``.tally/metrics``), every process, the worker's pool included,
writes its counts there and the API's ``/metrics`` sums them
(prometheus-client, "Multiprocess Mode"); otherwise each process counts alone.
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
