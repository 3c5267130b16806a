"""The rate limits' in-process storage (api.limits.SweptMemoryStorage): no thread per count."""

from __future__ import annotations

import threading
import time

from limits.storage import storage_from_string

from api import limits
from api.limits import SweptMemoryStorage


def test_the_scheme_names_the_swept_storage() -> None:
    assert isinstance(storage_from_string("tally-memory://"), SweptMemoryStorage)


def test_counts_after_the_libraries_timer_has_run_restart_no_timer() -> None:
    storage = SweptMemoryStorage()
    first = storage.timer
    first.join()  # the timer limits starts in __init__ has run and ended
    for _ in range(3):
        storage.incr("key", expiry=60)  # limits' own incr would start a new timer here
    assert storage.timer is first
    assert not first.is_alive()
    assert storage.get("key") == 3


def test_concurrent_counts_are_all_counted() -> None:
    storage = SweptMemoryStorage()
    barrier = threading.Barrier(8)

    def count() -> None:
        barrier.wait()
        for _ in range(100):
            storage.incr("key", expiry=60)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.get("key") == 800


def test_a_count_sweeps_expired_counters_at_most_once_an_interval(monkeypatch) -> None:
    monkeypatch.setattr(limits, "SWEEP_INTERVAL_SECONDS", 3600.0)
    storage = SweptMemoryStorage()
    storage.timer.join()  # limits' own first timer has run and ended
    storage.incr("idle", expiry=0.01)  # the first count sweeps (nothing yet) and arms the interval
    time.sleep(0.02)  # "idle" expires
    storage.incr("busy", expiry=60)  # within the interval: no sweep
    assert "idle" in storage.expirations
    storage._next_sweep = 0.0  # the interval has passed
    storage.incr("busy", expiry=60)
    assert "idle" not in storage.expirations
    assert storage.get("busy") == 2
