"""The one place that sends Celery messages: the API, the worker and the CLI publish here.

Messages are sent by task name (``Celery.send_task``) from a producer-only
Celery app, so the API and the CLI never import the worker's tasks. Nothing
else in Tally calls ``send_task`` or ``apply_async`` (tests/unit/test_architecture.py).

Every message goes to the ``tally`` queue through the default direct
exchange, which Celery turns into AMQP's anonymous exchange (celery
``app/amqp.py``, ``send_task_message``: "convert to anon-exchange"); kombu's
Redis transport then pushes it straight onto the queue's list
(``kombu/transport/virtual/base.py``, ``basic_publish``). So a publish does
not depend on the ``_kombu.binding.*`` sets that an emptied Redis loses, and
that would otherwise route a message into nothing (``Channel._lookup`` falls
back to a dead-letter queue with only a warning).

Publishing never waits long: a broker that is down raises at once, the
caller's database row is already durable, and the sweep publishes it later
(docs/architecture.md, "Known pitfalls").
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from celery import Celery

from shared.config import get_settings
from shared.metrics import PUBLISH_FAILURES
from shared.redis_client import get_redis
from shared.services.deliveries import (
    DELIVER_ENDPOINT_TASK,
    DELIVER_WEBHOOK_TASK,
    endpoint_signal_key,
)

#: The queue every Tally task is sent to and every worker consumes.
QUEUE = "tally"

#: The task that drains the apply stream (``worker.tasks.drain``).
DRAIN_TASK = "tally.drain"

#: The Redis key that marks "the stream has work no drain has read yet".
#:
#: :func:`signal_drain` publishes a drain only when it can ``SET NX`` this key.
#: A drain deletes it once it holds the stream's lock, *before* it reads the
#: stream, and takes it again (``GETDEL``) each time the stream looks empty; a
#: drain that finds the lock held leaves the key alone and ends, and the
#: holder, once it has let the lock go, publishes again if the key is set. So a
#: transaction committed before a failed ``SET NX`` is read by a drain that has
#: not yet taken the key, and one committed later sets the key and publishes:
#: no wake-up is lost, and no message waits for a busy stream. The key
#: expires, so a lost message or a crashed holder only delays the stream until
#: the sweep.
STREAM_SIGNAL_KEY = "tally:stream"

#: How long the API's signal thread gathers signals before a flush, in seconds.
_GATHER_SECONDS = 0.001

_log = structlog.get_logger(__name__)


@functools.cache
def _producer() -> Celery:
    settings = get_settings()
    timeout_seconds = settings.broker_publish_timeout_seconds
    producer = Celery("tally-producer", broker=settings.redis_url)
    producer.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        broker_connection_retry=False,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "max_retries": 0,
        },
    )
    return producer


def send(task_name: str, *args: str | int) -> None:
    """Send task ``task_name`` with JSON ``args`` (ids only); count and re-raise a failure.

    Raises:
        Exception: whatever kombu raises when the broker cannot be reached
            (``kombu.exceptions.OperationalError`` and the like).
    """
    try:
        _producer().send_task(task_name, args=list(args), queue=QUEUE, retry=False)
    except Exception:
        PUBLISH_FAILURES.inc()
        raise


def publish_drain() -> None:
    """Publish "the stream has pending work" whatever its signal says.

    The sweep and a drain that stops at its budget use this: a stale signal must not stop them.

    Raises:
        Exception: the broker could not be reached (see :func:`send`).
    """
    send(DRAIN_TASK)


def signal_drain() -> None:
    """Publish a drain unless one is queued already (:data:`STREAM_SIGNAL_KEY`); one round trip.

    Coalesces: one queued drain is enough, because a drain applies everything
    pending in acceptance order.

    Raises:
        Exception: Redis or the broker could not be reached; the sweep recovers.
    """
    _publish_unsignalled(
        {STREAM_SIGNAL_KEY: None},
        lambda _: publish_drain(),
        ttl_seconds=get_settings().stream_signal_ttl_seconds,
    )


def signal_drains(_shards: Iterable[int] = ()) -> None:
    """Call :func:`signal_drain`: every lane now drains in the one stream."""
    signal_drain()


def clear_drain_signal() -> None:
    """Delete the stream's signal; a drain calls it once it holds the lock, before it reads.

    Raises:
        Exception: Redis could not be reached (the signal then expires by itself).
    """
    get_redis().delete(STREAM_SIGNAL_KEY)


def take_drain_signal() -> bool:
    """Tell whether work was signalled since the last take or clear, and clear the signal.

    Raises:
        Exception: Redis could not be reached.
    """
    return get_redis().getdel(STREAM_SIGNAL_KEY) is not None


def _publish_unsignalled(
    keyed: dict[str, Any], publish: Callable[[Any], None], *, ttl_seconds: int
) -> None:
    """Publish each value of ``keyed`` whose signal key this call could ``SET NX``.

    One pipelined Redis round trip sets every key (``ttl_seconds``); a key
    already set means a message is queued and nothing is sent for it. A
    publish that fails deletes its key again, so the next signal tries anew.

    Raises:
        Exception: Redis or the broker could not be reached; the sweep recovers.
    """
    keys = list(keyed)
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, b"1", nx=True, ex=ttl_seconds)
            won = pipe.execute()
    except Exception:
        PUBLISH_FAILURES.inc()
        raise
    for key, set_now in zip(keys, won, strict=True):
        if set_now:
            try:
                publish(keyed[key])
            except Exception:
                get_redis().delete(key)
                raise


class DrainSignaller:
    """Coalesce the API's drain signals in a background thread: no broker round trip per request.

    A request calls :meth:`signal` after its commit and returns; the thread
    sends one :func:`signal_drain` for every signal since its last flush.
    Under load many requests share one flush; when idle, a flush starts at
    once. If the process dies between a commit and the flush, the sweep
    publishes a drain (docs/architecture.md, invariant 4), as it does when
    the broker is down.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pending = False
        self._pid: int | None = None

    def signal(self, _shard: int = 0) -> None:
        """Mark the stream as having new pending work; never blocks on the network."""
        with self._condition:
            if self._pid != os.getpid():  # the first call, or a forked child: start its thread
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="drain-signaller", daemon=True).start()
            self._pending = True
            self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
            # Let the requests arriving together share this flush: a millisecond
            # is little next to a drain, and under load it saves a round trip each.
            time.sleep(_GATHER_SECONDS)
            with self._condition:
                self._pending = False
            try:
                signal_drain()
            except Exception as error:  # the rows are durable; the sweep publishes them
                _log.warning("drain_signal_failed", error=str(error))


#: The API process's signaller (one thread per process).
drain_signaller = DrainSignaller()


#: The queue of webhook deliveries: a slow receiver never waits in front of a drain.
WEBHOOKS_QUEUE = "tally.webhooks"


def send_delivery(delivery_id: uuid.UUID | str) -> None:
    """Publish one attempt at webhook delivery ``delivery_id`` on ``tally.webhooks``, now.

    The ops retry uses this: one delivery, attempted now.

    Raises:
        Exception: the broker could not be reached (the delivery sweep sends it).
    """
    try:
        _producer().send_task(
            DELIVER_WEBHOOK_TASK, args=[str(delivery_id)], queue=WEBHOOKS_QUEUE, retry=False
        )
    except Exception:
        PUBLISH_FAILURES.inc()
        raise


def send_endpoint(endpoint_id: uuid.UUID | str) -> None:
    """Publish a turn at endpoint ``endpoint_id``'s due deliveries on ``tally.webhooks``, now.

    Raises:
        Exception: the broker could not be reached (the delivery sweep sends it).
    """
    try:
        _producer().send_task(
            DELIVER_ENDPOINT_TASK, args=[str(endpoint_id)], queue=WEBHOOKS_QUEUE, retry=False
        )
    except Exception:
        PUBLISH_FAILURES.inc()
        raise


def signal_endpoints(endpoint_ids: Iterable[uuid.UUID | str]) -> None:
    """Publish a turn for each endpoint that has none queued; one Redis round trip.

    New deliveries (after their event commits, their endpoints deduplicated) and
    the delivery sweep use this, so one queued message stands for any number of
    an endpoint's due deliveries (``shared.services.deliveries.endpoint_signal_key``);
    the key lives one attempt lease, so a lost message is sent again by a later sweep.

    Raises:
        Exception: Redis or the broker could not be reached; the sweep recovers.
    """
    _publish_unsignalled(
        {endpoint_signal_key(str(e)): str(e) for e in endpoint_ids},
        send_endpoint,
        ttl_seconds=max(1, int(get_settings().webhook_attempt_lease_seconds)),
    )
