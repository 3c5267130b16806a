"""One scheduler at a time (celery-redbeat's lock): two beats never both schedule, and a standby takes over."""

from __future__ import annotations

import time

import pytest

from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

SENT = "Sending due task sweep-stalled-transactions"


def sends(process: CeleryProcess) -> int:
    return process.log_path.read_text(errors="replace").count(SENT)


def test_two_beats_schedule_each_job_once_per_interval_and_fail_over() -> None:
    first = CeleryProcess("beat", "beat-a").start()
    second = CeleryProcess("beat", "beat-b").start()
    try:
        window_seconds = 8.0  # the sweep interval is 1 s in the tests
        time.sleep(window_seconds)
        counts = sorted([sends(first), sends(second)])
        assert counts[0] == 0, f"both beats scheduled: {counts}"
        assert 1 <= counts[1] <= window_seconds + 2, f"sends in {window_seconds}s: {counts}"

        active, standby = (first, second) if sends(first) else (second, first)
        active.kill()
        deadline = time.monotonic() + 30  # lock timeout is 6 s in the tests
        while sends(standby) == 0:
            assert time.monotonic() < deadline, f"standby never took over:\n{standby.log()}"
            time.sleep(0.2)
    finally:
        first.stop()
        second.stop()
