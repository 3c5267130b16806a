"""Metrics of beat's jobs, from Celery's task signals: no code in the jobs themselves.

For every task that beat schedules (``worker.schedule``), the worker counts
each run by outcome in ``tally_beat_job_runs_total{job, outcome}`` and times
it in ``tally_beat_job_duration_seconds{job}``; ``job`` is the task's name, a
label bounded by the schedule table (Celery docs, "Signals": ``task_prerun``,
``task_postrun``). A failed run (an exception) also shows in the worker's log.
The same job started another way (``POST /v1/reconciliations``) is counted too.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import task_postrun, task_prerun

from shared.config import get_settings
from shared.metrics import BEAT_JOB_DURATION, BEAT_JOB_RUNS
from worker.schedule import beat_schedule

#: The names of the tasks beat schedules: the ``job`` label's values.
BEAT_JOBS = frozenset(entry["task"] for entry in beat_schedule(get_settings()).values())

#: Start times of the running beat jobs in this process, by task id (``perf_counter`` seconds).
_started: dict[str, float] = {}


@task_prerun.connect
def _job_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Note when a beat job starts (every other task is ignored)."""
    if task is not None and task.name in BEAT_JOBS and task_id is not None:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _job_finished(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    """Count a finished beat job by outcome and observe its duration."""
    started = _started.pop(task_id or "", None)
    if task is None or started is None:
        return
    outcome = "succeeded" if state == "SUCCESS" else "failed"
    BEAT_JOB_RUNS.labels(task.name, outcome).inc()
    BEAT_JOB_DURATION.labels(task.name).observe(time.perf_counter() - started)
