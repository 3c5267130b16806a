"""Prometheus metrics shared by the API, the worker and beat's jobs (prometheus-client).

When ``PROMETHEUS_MULTIPROC_DIR`` is set before a process starts (``tally up``
sets it to ``.tally/metrics``; compose mounts one volume at ``/metrics`` in the
api and the worker), every process, the worker's pool included, writes its
values there and the API's ``/metrics`` merges them (prometheus-client,
"Multiprocess Mode"); otherwise each process counts alone. Counters and
histograms are summed over processes. Gauges say how they merge: the ones here
are set by one job at a time (the sweep, ``/readyz``), so the most recent value
written by any process wins (``multiprocess_mode="mostrecent"``), whichever
process wrote it and whether or not it is still alive.

Names and labels follow the Prometheus naming guide ("Metric and label
naming"): a ``tally_`` prefix, base units (seconds) as a suffix, ``_total`` on
counters, and label values drawn from small fixed sets (route templates, not
paths; failure codes, not messages). docs/operations.md lists every metric and
the alert rules in deploy/prometheus/tally-rules.yml.
"""

from __future__ import annotations

import bisect
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


def fresh_multiprocess_dir(path: Path) -> Path:
    """Empty ``path`` (creating it if need be) for ``PROMETHEUS_MULTIPROC_DIR``; return it.

    prometheus-client's multiprocess mode needs the directory emptied before
    the processes that share it start, or the files of processes that are gone
    are counted again (prometheus-client, "Multiprocess Mode").
    """
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


#: Seconds: from a millisecond (a cached read) to a long-poll's 30 s.
_REQUEST_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # fmt: skip
#: Seconds from submission to a terminal status: a busy batch to a sweep after an outage.
_SETTLE_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)  # fmt: skip
#: Seconds of one apply transaction or one beat job.
_APPLY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)  # fmt: skip
_JOB_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800)
#: Transactions per apply batch, up to ``TALLY_BATCH_SIZE``'s maximum.
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

# -- API ----------------------------------------------------------------------------------------

HTTP_REQUEST_DURATION = Histogram(
    "tally_http_request_duration_seconds",
    "Time Flask spent answering a request, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=_REQUEST_BUCKETS_SECONDS,
)
TRANSACTIONS_SUBMITTED = Counter(
    "tally_transactions_submitted_total",
    "Transactions accepted as pending at intake (replays not counted), by type.",
    ["type"],
)
PUBLISH_FAILURES = Counter(
    "tally_publish_failures_total",
    "Broker publishes that failed after commit; the sweep re-publishes them.",
)
RATE_LIMITED = Counter(
    "tally_rate_limited_total",
    "Requests refused 429 because their API key was over its rate limit, by the key's role.",
    ["role"],
)
INTAKE_BACKPRESSURE_SECONDS = Histogram(
    "tally_intake_backpressure_seconds",
    "Time a recording waited for the apply stream, observed when the backlog was over "
    "TALLY_INTAKE_BACKLOG_MAX (shared.services.backpressure).",
    buckets=_REQUEST_BUCKETS_SECONDS,
)
LONG_POLL_WAKEUPS = Counter(
    "tally_long_poll_wakeups_total",
    "Parked long-polls that ended their wait, by reason: the transaction was announced "
    '("announced") or the wait ran out ("deadline").',
    ["reason"],
)

# -- apply path ---------------------------------------------------------------------------------

TRANSACTIONS_SETTLED = Counter(
    "tally_transactions_settled_total",
    "Transactions that left pending, by type, the status they reached and failure code "
    '("none" unless failed).',
    ["type", "status", "failure_code"],
)
RETRIES_EXHAUSTED = Counter(
    "tally_retries_exhausted_total",
    "Transactions failed with retries_exhausted (each also logged at ERROR).",
)
APPLY_BATCH_SIZE = Histogram(
    "tally_apply_batch_transactions",
    "Transactions applied per apply database transaction.",
    buckets=_BATCH_BUCKETS,
)
APPLY_BATCH_DURATION = Histogram(
    "tally_apply_batch_duration_seconds",
    "Time of one apply database transaction, from its first statement to its commit.",
    buckets=_APPLY_BUCKETS_SECONDS,
)
SETTLE_DURATION = Histogram(
    "tally_transaction_settle_duration_seconds",
    "Time from a transaction's submission (created_at) to its terminal status (completed_at).",
    buckets=_SETTLE_BUCKETS_SECONDS,
)
STREAM_LOCKS_RELEASED = Counter(
    "tally_stream_locks_released_total",
    "Apply stream locks freed by the sweep because their holder sat idle for "
    "TALLY_STREAM_LOCK_IDLE_SECONDS (each also logged at ERROR).",
)
DRAIN_RETRIES = Counter(
    "tally_drain_retries_total",
    "Drain messages retried after a transient error (lost connection, deadlock, lock timeout).",
)

# -- beat jobs and the sweep ------------------------------------------------------------------

PENDING_TRANSACTIONS = Gauge(
    "tally_pending_transactions",
    "Transactions pending at the last sweep.",
    multiprocess_mode="mostrecent",
)
PENDING_OLDEST_AGE = Gauge(
    "tally_pending_oldest_age_seconds",
    "Age of the oldest pending transaction at the last sweep (0 when none).",
    multiprocess_mode="mostrecent",
)
BEAT_JOB_RUNS = Counter(
    "tally_beat_job_runs_total",
    "Runs of beat's jobs, by job (the task name) and outcome (succeeded or failed).",
    ["job", "outcome"],
)
BEAT_JOB_DURATION = Histogram(
    "tally_beat_job_duration_seconds",
    "Time one run of a beat job took, by job.",
    ["job"],
    buckets=_JOB_BUCKETS_SECONDS,
)
SCHEDULED_RELEASED = Counter(
    "tally_scheduled_transactions_released_total",
    "Scheduled transactions released to pending by beat once due.",
)
RECONCILIATION_MISMATCHES = Counter(
    "tally_reconciliation_mismatches_total",
    "Wallets found with a stored balance or held amount that disagrees with the ledger.",
)
RECONCILIATION_RUNS = Counter(
    "tally_reconciliation_runs_total",
    "Reconciliation runs finished, by status (ok, mismatch or error).",
    ["status"],
)
DEPENDENCY_UP = Gauge(
    "tally_dependency_up",
    "1 when the dependency answered the last check (/readyz or the sweep), else 0.",
    ["dependency"],
    multiprocess_mode="mostrecent",
)


def observe_many(histogram: Any, values_seconds: Iterable[float]) -> None:
    """Add every value of ``values_seconds`` to ``histogram`` with one update per bucket.

    The apply path observes each settled transaction's settle time; a batch of
    a few hundred would otherwise cost a locked write per value (a memory-mapped
    file write in multiprocess mode). The result is the same as calling
    ``histogram.observe(value)`` for each value (tests/unit/test_metrics.py).

    Args:
        histogram: a ``prometheus_client.Histogram`` without labels, or a labelled child.
        values_seconds: the observations, in the histogram's unit.
    """
    counts: dict[int, int] = {}
    total = 0.0
    bounds = histogram._upper_bounds  # ascending, the last is +Inf
    for value in values_seconds:
        index = bisect.bisect_left(bounds, value)  # the first bound >= value: observe()'s bucket
        counts[index] = counts.get(index, 0) + 1
        total += value
    if not counts:
        return
    histogram._sum.inc(total)
    for index, count in counts.items():
        histogram._buckets[index].inc(count)


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
    "Endpoints disabled because their attempts failed TALLY_WEBHOOK_DISABLE_AFTER_FAILURES "
    "times in a row and for TALLY_WEBHOOK_DISABLE_AFTER_SECONDS (each also logged at ERROR).",
)
#: Set by the delivery sweep; the most recent value of any process is the one served.
WEBHOOK_UNDELIVERED_AGE = Gauge(
    "tally_webhook_undelivered_age_seconds_max",
    "Age of the oldest pending delivery to an enabled endpoint, in seconds (0: none).",
    multiprocess_mode="mostrecent",
)
