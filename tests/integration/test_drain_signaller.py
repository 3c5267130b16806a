"""The drain signaller against the real Redis and queue: flushes are spaced while a drain is queued.

``broker.DrainSignaller`` sends one ``signal_drain`` (a ``SET NX`` of the
stream's signal, and a drain message if it wins) for the signals gathered
since its last flush. After a flush that finds a drain already queued, it
holds further signals for an interval; none is ever dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import broker

#: How long a test waits for a signal that must be sent without a flush, in seconds.
SENT_WITHIN_SECONDS = 30.0


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record what each of the signaller's calls of the real ``signal_drain`` returned."""
    real = broker.signal_drain
    results: list[bool] = []

    def counted() -> bool:
        results.append(real())
        return results[-1]

    monkeypatch.setattr(broker, "signal_drain", counted)
    return results


@pytest.fixture
def clean_stream(redis_client: Any) -> Iterator[None]:
    """Start with no stream signal and no queued message; leave none behind."""
    redis_client.delete(broker.STREAM_SIGNAL_KEY, broker.QUEUE)
    yield
    redis_client.delete(broker.STREAM_SIGNAL_KEY, broker.QUEUE)


def _queued_in_redis(redis_client: Any) -> int:
    queued = redis_client.lrange(broker.QUEUE, 0, -1)
    return sum(broker.DRAIN_TASK.encode() in message for message in queued)


def _wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + SENT_WITHIN_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.usefixtures("clean_stream")
def test_signals_after_a_flush_that_found_a_drain_queued_wait_for_the_interval(
    redis_client: Any, flushes: list[bool]
) -> None:
    signaller = broker.DrainSignaller(queued_interval_seconds=lambda: 3600.0)
    redis_client.set(broker.STREAM_SIGNAL_KEY, b"1", ex=600)  # a drain is queued
    signaller.signal()
    assert signaller.flush()
    assert flushes == [False]  # it met the queued drain

    for _ in range(3):
        signaller.signal()
    time.sleep(0.3)
    assert flushes == [False]  # held: the interval has not ended

    assert signaller.flush()  # an explicit flush (a process's exit) sends at once
    assert flushes == [False, False]
    assert _queued_in_redis(redis_client) == 0


@pytest.mark.usefixtures("clean_stream")
def test_a_held_signal_publishes_a_drain_if_the_queued_one_ended_meanwhile(
    redis_client: Any, flushes: list[bool]
) -> None:
    signaller = broker.DrainSignaller(queued_interval_seconds=lambda: 0.2)
    redis_client.set(broker.STREAM_SIGNAL_KEY, b"1", ex=600)
    signaller.signal()
    assert signaller.flush()
    assert flushes == [False]

    # The queued drain takes the signal and ends; a commit then signals. No
    # explicit flush: the signal must go out when the interval ends.
    redis_client.delete(broker.STREAM_SIGNAL_KEY)
    signaller.signal()
    assert _wait_until(lambda: _queued_in_redis(redis_client) == 1)
    assert flushes == [False, True]


@pytest.mark.usefixtures("clean_stream")
def test_signals_after_a_flush_that_published_are_not_held(
    redis_client: Any, flushes: list[bool]
) -> None:
    # An interval far longer than the wait: a held signal would fail the test.
    signaller = broker.DrainSignaller(queued_interval_seconds=lambda: 3600.0)
    signaller.signal()
    assert _wait_until(lambda: _queued_in_redis(redis_client) == 1)
    assert flushes == [True]

    redis_client.delete(broker.STREAM_SIGNAL_KEY)  # as the drain does when it takes the lock
    signaller.signal()
    assert _wait_until(lambda: _queued_in_redis(redis_client) == 2)
    assert flushes == [True, True]


def test_the_interval_is_the_drains_apply_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import get_settings

    monkeypatch.setenv("TALLY_APPLY_GATHER_SECONDS", "0.07")
    get_settings.cache_clear()
    try:
        assert broker.DrainSignaller()._queued_interval_seconds() == pytest.approx(0.07)
    finally:
        monkeypatch.delenv("TALLY_APPLY_GATHER_SECONDS")
        get_settings.cache_clear()
