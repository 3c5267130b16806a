"""Backpressure at intake (``shared.services.backpressure``): when a recording waits, and when not.

The stream's progress comes from a scripted reader here, so that each case
decides exactly what the stream did; tests/integration/test_backpressure.py
reads it from Redis, as the API does, with the worker's real drain moving it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from shared.metrics import INTAKE_BACKPRESSURE_SECONDS
from shared.services.backpressure import Backpressure


def reader(values: Iterator[int | None]) -> tuple[Callable[[], int | None], list[int | None]]:
    """Return a reader that answers ``values`` one per call (the last one after that) and its log."""
    seen: list[int | None] = []
    last: list[int | None] = [None]

    def read() -> int | None:
        last[0] = next(values, last[0])
        seen.append(last[0])
        return last[0]

    return read, seen


def waits_observed() -> float:
    """Return how many recordings found the backlog over its bound so far."""
    (metric,) = INTAKE_BACKPRESSURE_SECONDS.collect()
    return next(s.value for s in metric.samples if s.name.endswith("_count"))


def test_within_the_bound_a_recording_goes_without_reading_the_progress() -> None:
    read, seen = reader(iter([]))
    backpressure = Backpressure(read, backlog_max=100, stall_seconds=60)
    backpressure.accepted(100)
    backpressure.admit()
    assert seen == []


def test_a_recording_waits_until_the_stream_is_within_the_bound() -> None:
    read, seen = reader(iter(range(100, 2001, 100)))  # the stream settles 100 per read
    backpressure = Backpressure(read, backlog_max=100, stall_seconds=60, poll_seconds=0)
    backpressure.accepted(1000)
    before = waits_observed()
    backpressure.admit()
    assert seen == list(range(100, 901, 100))  # 1000 - 900 <= 100: it went at the ninth read
    assert waits_observed() == before + 1


def test_a_stream_that_stops_moving_stops_holding_recordings() -> None:
    read, seen = reader(iter([500]))  # it moved once, then never again
    backpressure = Backpressure(read, backlog_max=100, stall_seconds=0.05, poll_seconds=0.01)
    backpressure.accepted(1000)
    backpressure.admit()  # returns: it does not wait for a stream that does not move
    assert len(seen) >= 2 and set(seen) == {500}
    reads = len(seen)
    backpressure.admit()  # still stalled: the next recording goes after at most one read
    assert len(seen) <= reads + 1


def test_an_unknown_progress_never_holds_a_recording_and_is_not_read_again_at_once() -> None:
    read, seen = reader(iter([]))  # no worker has stored its progress, or Redis is away
    backpressure = Backpressure(read, backlog_max=100, stall_seconds=60, poll_seconds=0)
    backpressure.accepted(1000)
    backpressure.admit()
    backpressure.admit()  # within the stall window: no second read (a slow Redis costs one)
    assert seen == [None]


def test_backpressure_off_never_reads_the_progress() -> None:
    read, seen = reader(iter([]))
    backpressure = Backpressure(read, backlog_max=0, stall_seconds=60)
    backpressure.accepted(10**9)
    backpressure.admit()
    assert seen == []


def test_many_waiting_threads_all_go_once_the_stream_catches_up() -> None:
    release = threading.Event()
    reads: list[int] = []

    def read() -> int | None:
        reads.append(1)
        return 1000 if release.is_set() else 1 + len(reads) // 1000  # moving slowly

    backpressure = Backpressure(read, backlog_max=100, stall_seconds=60, poll_seconds=0.001)
    backpressure.accepted(1000)
    admitted: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: (backpressure.admit(), admitted.append(n)))
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    release.wait(0.2)
    assert admitted == []  # the stream is 999 behind and moving: everyone waits
    release.set()
    for thread in threads:
        thread.join(30)
    assert sorted(admitted) == list(range(8))
