"""Backpressure at intake: hold answers back while the apply stream is far behind.

Intake can accept transactions faster than the one apply stream settles them
(batch submissions on a shared machine: docs/benchmarks.md, series 13).
Nothing is lost then, but the backlog grows without bound and each new
transaction waits longer for its outcome. So, before it records, an API
process compares the newest ``lane_sequence`` it has accepted with the
stream's progress (the highest one settled, which the worker stores in
Redis after each apply commit: ``shared.wakeups``). While the difference is
above ``backlog_max`` and the stream is moving, the recording waits; the
request is answered later, never refused. A closed-loop client then submits
at the pace of the apply stream, and the backlog stays near ``backlog_max``
(the technique of a bounded queue in front of a slower stage).

When the stream does not move (no worker, a poison transaction on its
attempts, Redis away), waiting would only stop intake, which records
durably whatever the workers' state (docs/architecture.md, "The flow"). So a
wait ends once the stream has shown no progress for ``stall_seconds``, and
later recordings go at once until it moves again.

The difference is in sequence numbers, counted per process: a process knows
the newest transaction it accepted, and the stream's progress is global, so
the difference is the backlog up to that transaction, whichever process
accepted the rest (gaps left by refused items make it a slight overestimate).
The progress is read from Redis only when the last value read would make the
backlog too long, and at most once per ``poll_seconds`` for the whole process.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from shared.config import get_settings
from shared.metrics import INTAKE_BACKPRESSURE_SECONDS
from shared.wakeups import read_applied_sequence

#: Returns the stream's progress (the highest ``lane_sequence`` settled), or None when unknown.
ReadApplied = Callable[[], int | None]


class Backpressure:
    """Make recordings wait while this process is ``backlog_max`` ahead of the apply stream.

    Args:
        read_applied: returns the stream's progress (``shared.wakeups.read_applied_sequence``);
            None when it cannot tell (no worker has run, Redis away).
        backlog_max: the most transactions (in ``lane_sequence`` numbers) that
            may wait for the stream when a recording starts; 0 turns backpressure off.
        stall_seconds: how long the stream may show no progress before
            recordings stop waiting for it, in seconds.
        poll_seconds: the shortest time between two reads of the progress, in seconds.
        clock: a monotonic clock in seconds (``time.monotonic``).
    """

    def __init__(
        self,
        read_applied: ReadApplied,
        *,
        backlog_max: int,
        stall_seconds: float,
        poll_seconds: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_applied = read_applied
        self._backlog_max = backlog_max
        self._stall_seconds = stall_seconds
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._gate = threading.Lock()  # one recording waits at a time; the rest sleep on it
        self._lock = threading.Lock()
        self._accepted = 0  # the newest lane_sequence this process recorded as pending
        self._applied = 0  # the stream's progress, as last read
        self._moved_at = float("-inf")  # when a read last saw the progress advance
        self._next_read = float("-inf")

    def admit(self) -> None:
        """Return when a recording may start: at once unless the stream is too far behind.

        Waits while this process's newest accepted transaction is more than
        ``backlog_max`` ahead of the stream's progress and the progress has
        advanced within ``stall_seconds``; the time spent waiting is observed
        in ``tally_intake_backpressure_seconds``. One waiting recording reads
        the progress and sleeps between reads; the others sleep on a lock
        until it goes, so waiting costs one thread's polling, however many
        wait. The bound is judged as a recording starts: recordings let go
        together may pass it by their own size. Never raises for the
        stream's state: an unknown progress lets the recording go.
        """
        if not self.over():
            return
        started = self._clock()
        with self._gate:
            while self._over():
                now = self._clock()
                if now >= self._next_read:
                    self._next_read = now + self._poll_seconds
                    self._refresh(now)
                    if not self._over():
                        break
                if now - self._moved_at > self._stall_seconds:
                    break  # the stream is not moving: waiting would only stop intake
                time.sleep(max(self._next_read - now, 0.0))
        INTAKE_BACKPRESSURE_SECONDS.observe(self._clock() - started)

    def over(self) -> bool:
        """Tell whether a recording starting now would wait (judged on the progress last read).

        Cheap and never blocks: for a caller that must not wait itself
        (the server's event loop) to decide whether to hand the wait to a thread.
        """
        return self._backlog_max > 0 and self._over()

    def accepted(self, lane_sequence: int) -> None:
        """Note that this process recorded a pending transaction at ``lane_sequence``."""
        with self._lock:
            self._accepted = max(self._accepted, lane_sequence)

    def _over(self) -> bool:
        """Tell whether this process is more than ``backlog_max`` ahead of the progress last read."""
        return self._accepted - self._applied > self._backlog_max

    def _refresh(self, now: float) -> None:
        """Read the stream's progress (the caller holds the gate).

        An unknown progress (nothing stored, Redis away) is not read again for
        ``stall_seconds``: recordings meanwhile go at once, and a Redis that
        does not answer costs one slow read per window, not one per poll.
        """
        applied = self._read_applied()
        if applied is None:
            self._next_read = now + self._stall_seconds
        elif applied > self._applied:
            self._applied = applied
            self._moved_at = now


@functools.cache
def for_this_process() -> Backpressure:
    """Return this process's backpressure on intake (one per process), from the settings.

    ``TALLY_INTAKE_BACKLOG_MAX`` and ``TALLY_INTAKE_BACKLOG_STALL_SECONDS``; the
    progress is read from Redis (``shared.wakeups.read_applied_sequence``).
    """
    settings = get_settings()
    return Backpressure(
        read_applied_sequence,
        backlog_max=settings.intake_backlog_max,
        stall_seconds=settings.intake_backlog_stall_seconds,
    )
