"""Long-poll waiters: requests parked on a transaction id until the worker says it settled.

One subscriber per API process listens on ``shared.wakeups.SETTLED_CHANNEL``
and sets the events of the requests waiting on the announced ids. A waiting
request holds neither a database connection nor, under gunicorn's gevent
workers, a thread: only a greenlet and its socket. If Redis is unreachable
the subscriber retries every second and waiting requests simply answer at
their deadline, after one more read of the row.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator

import structlog

from shared.redis_client import get_redis
from shared.wakeups import SETTLED_CHANNEL

_log = structlog.get_logger(__name__)


class Waiters:
    """The events of the requests waiting on each transaction id, fed by one subscriber thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = collections.defaultdict(set)
        self._pid: int | None = None

    @contextlib.contextmanager
    def watch(self, transaction_id: uuid.UUID) -> Iterator[threading.Event]:
        """Yield an event that is set when ``transaction_id`` is announced as settled."""
        key, event = str(transaction_id), threading.Event()
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: start its subscriber
                self._pid = os.getpid()
                threading.Thread(target=self._subscribe, name="waiters", daemon=True).start()
            self._events[key].add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._events.get(key)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._events[key]

    def _wake(self, transaction_ids: list[str]) -> None:
        with self._lock:
            for transaction_id in transaction_ids:
                for event in self._events.get(transaction_id, ()):
                    event.set()

    def _subscribe(self) -> None:
        while True:
            try:
                pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(SETTLED_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._wake(message["data"].decode().split())
            except Exception as error:  # waiting requests still answer at their deadline
                _log.warning("waiters_subscription_lost", error=str(error))
                time.sleep(1.0)


#: This process's waiters.
waiters = Waiters()
