"""One scheduler at a time (celery-redbeat's lock): two beats never both schedule, and a standby takes over."""

from __future__ import annotations

import time

import pytest

from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

#: Interval jobs and their intervals in this test, seconds (the snapshot is a daily crontab).
INTERVALS = {"sweep-stalled-transactions": 1, "reconcile": 2, "archive-entries": 3}
BEAT_ENV = {"TALLY_RECONCILE_INTERVAL_SECONDS": "2", "TALLY_ARCHIVE_INTERVAL_SECONDS": "3"}


def sends(process: CeleryProcess, job: str) -> int:
    return process.log_path.read_text(errors="replace").count(f"Sending due task {job} ")


def test_two_beats_schedule_each_job_once_per_interval_and_fail_over() -> None:
    first = CeleryProcess("beat", "beat-a", env=BEAT_ENV).start()
    second = CeleryProcess("beat", "beat-b", env=BEAT_ENV).start()
    try:
        window_seconds = 9.0
        time.sleep(window_seconds)
        for job, interval_seconds in INTERVALS.items():
            counts = sorted([sends(first, job), sends(second, job)])
            assert counts[0] == 0, f"both beats scheduled {job}: {counts}"
            assert 1 <= counts[1] <= window_seconds / interval_seconds + 2, (job, counts)

        job = "sweep-stalled-transactions"
        active, standby = (first, second) if sends(first, job) else (second, first)
        active.kill()
        deadline = time.monotonic() + 30  # the lock timeout is 6 s in the tests
        while sends(standby, job) == 0:
            assert time.monotonic() < deadline, f"standby never took over:\n{standby.log()}"
            time.sleep(0.2)
    finally:
        first.stop()
        second.stop()
