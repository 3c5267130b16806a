"""The one place that sends Celery messages, and owns their names, queues and Redis keys.

Code that commits work says what to send with :func:`send_after_commit`: the
message waits on the session and is sent once the commit succeeds, whether
the commit is a route's, a service's, the drain's or the CLI's. The sweeps
and the drain's own hand-over send at once (:func:`publish_drain`,
:func:`signal_endpoints`). Every task name, both queue names and the Redis
signal keys are defined here; the worker registers its tasks under these
names, and services import them from here, never the other way round
(tests/unit/test_architecture.py).

Messages are sent by task name (``Celery.send_task``) from a producer-only
Celery app, so the API and the CLI never import the worker's tasks. Nothing
else in Tally calls ``send_task`` or ``apply_async`` (tests/unit/test_architecture.py).

Every message goes to its queue (:data:`QUEUE`, :data:`WEBHOOKS_QUEUE`)
through the default direct exchange, which Celery turns into AMQP's
anonymous exchange (celery ``app/amqp.py``, ``send_task_message``: "convert
to anon-exchange"); kombu's Redis transport then pushes it straight onto the
queue's list (``kombu/transport/virtual/base.py``, ``basic_publish``). So a
publish does not depend on the ``_kombu.binding.*`` sets that an emptied
Redis loses, and that would otherwise route a message into nothing
(``Channel._lookup`` falls back to a dead-letter queue with only a warning).

Publishing never waits long: a broker that is down raises at once, the
caller's database row is already durable, and the sweep publishes it later
(docs/architecture.md, "Known pitfalls").
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.orm import Session

from shared import db
from shared.config import get_settings
from shared.metrics import PUBLISH_FAILURES
from shared.redis_client import get_redis

if TYPE_CHECKING:
    from celery import Celery

#: The queue of the apply stream and the maintenance jobs; ``tally serve worker`` consumes it.
QUEUE = "tally"

#: The queue of webhook deliveries (``tally serve webhooks``): a slow receiver
#: never waits in front of a drain.
WEBHOOKS_QUEUE = "tally.webhooks"

# The task names: the worker registers its tasks under them (``worker/``), beat
# schedules them (``worker/schedule.py``) and this module sends them.

#: Drains the apply stream (``worker.tasks.drain``); no arguments.
DRAIN_TASK = "tally.drain"
#: Publishes a drain if the stream has stalled (beat).
SWEEP_STALLED_TASK = "tally.sweep_stalled_transactions"
#: Queues the expiries of holds past ``expires_at`` (beat).
EXPIRE_HOLDS_TASK = "tally.expire_holds"
#: Beat's release of due scheduled transactions (``worker.tasks.release_scheduled_transactions``).
RELEASE_SCHEDULED_TASK = "tally.release_scheduled_transactions"
#: Takes the daily balance snapshots (beat).
TAKE_SNAPSHOTS_TASK = "tally.take_snapshots"
#: Archives old ledger entries (beat).
ARCHIVE_ENTRIES_TASK = "tally.archive_entries"
#: Deletes events past their retention (beat).
PRUNE_EVENTS_TASK = "tally.prune_events"
#: Runs a reconciliation: beat's (no argument) or a started run's (its id).
RECONCILE_TASK = "tally.reconcile"
#: Takes a turn at one endpoint's due deliveries (its id), on :data:`WEBHOOKS_QUEUE`.
DELIVER_ENDPOINT_TASK = "tally.deliver_endpoint"
#: Makes one attempt at one delivery (its id; the ops retry), on :data:`WEBHOOKS_QUEUE`.
DELIVER_WEBHOOK_TASK = "tally.deliver_webhook"
#: Publishes every endpoint with a due delivery and none queued (beat).
SWEEP_WEBHOOK_DELIVERIES_TASK = "tally.sweep_webhook_deliveries"

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


def endpoint_signal_key(endpoint_id: uuid.UUID | str) -> str:
    """Return the Redis key that marks "a message for this endpoint is queued".

    New deliveries and the sweep publish an endpoint only when they can ``SET
    NX`` this key, so one queued message stands for any number of due
    deliveries: an endpoint costs the queue one message, not one per event.
    The task deletes it first; it expires, so a lost message costs one lease.
    """
    return f"tally:endpoint:{endpoint_id}"


#: How long a signal thread gathers signals before a flush, in seconds.
_GATHER_SECONDS = 0.001

#: How long a process that exits waits for its signal thread's last flush, in seconds.
_EXIT_FLUSH_SECONDS = 5.0

_log = structlog.get_logger(__name__)


@functools.cache
def _producer() -> Celery:
    # Imported here: a process that never sends (and ``shared``, which imports
    # this module's names) does not load Celery.
    from celery import Celery

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


def send(task_name: str, *args: str | int, queue: str = QUEUE) -> None:
    """Send task ``task_name`` with JSON ``args`` (ids only) to ``queue`` now; count and re-raise a failure.

    Raises:
        Exception: whatever kombu raises when the broker cannot be reached
            (``kombu.exceptions.OperationalError`` and the like).
    """
    try:
        _producer().send_task(task_name, args=list(args), queue=queue, retry=False)
    except Exception:
        PUBLISH_FAILURES.inc()
        raise


def publish_drain() -> None:
    """Publish "the stream has pending work" now, whatever its signal says.

    The sweep and a drain that stops at its budget use this: a stale signal must not stop them.

    Raises:
        Exception: the broker could not be reached (see :func:`send`).
    """
    send(DRAIN_TASK)


def signal_drain() -> bool:
    """Publish a drain now unless one is queued already (:data:`STREAM_SIGNAL_KEY`); one round trip.

    Coalesces: one queued drain is enough, because a drain applies everything
    pending in acceptance order. Code that commits work says so with
    :func:`send_after_commit` and :data:`DRAIN` instead, which ends here.

    Returns:
        True if this call published a drain; False if one was queued or
        running already (it looks at the stream again before it ends).

    Raises:
        Exception: Redis or the broker could not be reached; the sweep recovers.
    """
    published = _publish_unsignalled(
        {STREAM_SIGNAL_KEY: None},
        lambda _: publish_drain(),
        ttl_seconds=get_settings().stream_signal_ttl_seconds,
    )
    return bool(published)


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
) -> list[str]:
    """Publish each value of ``keyed`` whose signal key this call could ``SET NX``; return those keys.

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
    published = [key for key, set_now in zip(keys, won, strict=True) if set_now]
    for key in published:
        try:
            publish(keyed[key])
        except Exception:
            get_redis().delete(key)
            raise
    return published


def signal_endpoints(endpoint_ids: Iterable[uuid.UUID | str]) -> None:
    """Publish now a turn for each endpoint that has none queued; one Redis round trip.

    The delivery sweep and a turn that hands over use this; new deliveries
    are sent with :func:`send_after_commit` and :class:`Endpoints`, which ends
    here. One queued message stands for any number of an endpoint's due
    deliveries (:func:`endpoint_signal_key`); the key lives one attempt lease,
    so a lost message is sent again by a later sweep.

    Raises:
        Exception: Redis or the broker could not be reached; the sweep recovers.
    """
    _publish_unsignalled(
        {endpoint_signal_key(str(e)): str(e) for e in endpoint_ids},
        lambda endpoint_id: send(DELIVER_ENDPOINT_TASK, endpoint_id, queue=WEBHOOKS_QUEUE),
        ttl_seconds=max(1, int(get_settings().webhook_attempt_lease_seconds)),
    )


class DrainSignaller:
    """Coalesce a process's drain signals in a background thread: no broker round trip per commit.

    :func:`send_after_commit` with :data:`DRAIN` calls :meth:`signal` after the
    commit and returns; the thread sends one :func:`signal_drain` for every
    signal since its last flush. Under load many commits share one flush; when
    idle, a flush starts at once (after ``_GATHER_SECONDS``).

    **While a drain is queued, flushes are spaced.** A flush that finds a drain
    queued or running (its ``SET NX`` lost) learns that a drain will look at
    the stream again before it ends (it takes the signal when the stream looks
    empty, ``worker.tasks.drain``). Until ``queued_interval_seconds()`` after
    that flush, the thread holds further signals: a flush then would only
    meet the same queued drain, and at a moderate rate it cost the API one
    Redis round trip and four thread switches per group (docs/benchmarks.md,
    series 19). No signal is dropped: each is flushed at the end of the
    interval, so if that drain ended meanwhile, the next one is published at
    most one interval late. The interval is the drain's own
    ``TALLY_APPLY_GATHER_SECONDS``, the pause with which a running drain
    looks for new work, so the spacing adds nothing a running drain would
    not.

    A process that exits flushes at once and waits (at most
    ``_EXIT_FLUSH_SECONDS``) for its last signals (``atexit``), so a CLI
    command's signal is sent. If the process dies between a commit and the
    flush, the sweep publishes a drain (docs/architecture.md, invariant 4),
    as it does when the broker is down.

    Args:
        queued_interval_seconds: returns the spacing of flushes while a drain
            is queued, in seconds (default: the settings' ``apply_gather_seconds``).
    """

    def __init__(self, queued_interval_seconds: Callable[[], float] | None = None) -> None:
        self._queued_interval_seconds = queued_interval_seconds or (
            lambda: get_settings().apply_gather_seconds
        )
        self._condition = threading.Condition()
        self._pending = False
        self._flushing = False
        self._now = False
        #: ``time.monotonic()`` of the last flush that found a drain queued; None if the last did not.
        self._queued_seen_at: float | None = None
        self._pid: int | None = None

    def signal(self) -> None:
        """Mark the stream as having new pending work; never blocks on the network."""
        with self._condition:
            if self._pid != os.getpid():  # the first call, or a forked child: start its thread
                self._pid = os.getpid()
                self._flushing = self._now = False
                self._queued_seen_at = None
                threading.Thread(target=self._run, name="drain-signaller", daemon=True).start()
            # Only the first signal since a flush wakes the thread: one that is
            # gathering already has work, and is not woken for each signal.
            if not self._pending:
                self._pending = True
                self._condition.notify_all()

    def flush(self, timeout_seconds: float = _EXIT_FLUSH_SECONDS) -> bool:
        """Send every signal given so far now, and wait until it is sent (or has failed).

        Returns:
            True once nothing is left to send; False after ``timeout_seconds``.
        """
        with self._condition:
            if self._pid != os.getpid():
                return True  # nothing was signalled in this process
            if self._pending:
                self._now = True
                self._condition.notify_all()
            return self._condition.wait_for(
                lambda: not self._pending and not self._flushing, timeout_seconds
            )

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
                # Let the commits arriving together share this flush: a millisecond
                # is little next to a drain, and under load it saves a round trip each.
                flush_at = time.monotonic() + _GATHER_SECONDS
                if self._queued_seen_at is not None:
                    flush_at = max(flush_at, self._queued_seen_at + self._queued_interval_seconds())
                self._condition.wait_for(
                    lambda: self._now, timeout=max(0.0, flush_at - time.monotonic())
                )
                self._now = False
                self._pending = False
                self._flushing = True
            queued_seen_at = None
            try:
                if not signal_drain():
                    queued_seen_at = time.monotonic()
            except Exception as error:  # the rows are durable; the sweep publishes them
                _log.warning("drain_signal_failed", error=str(error))
            finally:
                with self._condition:
                    self._queued_seen_at = queued_seen_at
                    self._flushing = False
                    self._condition.notify_all()


#: The process's signaller (one thread per process).
drain_signaller = DrainSignaller()
atexit.register(drain_signaller.flush)


@dataclasses.dataclass(frozen=True, slots=True)
class Drain:
    """The message "the stream has pending work": coalesced, one queued drain at most."""


#: The one :class:`Drain` message: recorded, reopened or expired transactions are pending.
DRAIN = Drain()


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    """The message "these endpoints have due deliveries": one queued turn per endpoint at most."""

    endpoint_ids: tuple[uuid.UUID, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One task by name with its id arguments, on a queue: sent as is, never coalesced."""

    name: str
    args: tuple[str, ...] = ()
    queue: str = QUEUE


def reconcile(run_id: uuid.UUID) -> Task:
    """Return the message that runs the started reconciliation ``run_id``."""
    return Task(RECONCILE_TASK, (str(run_id),))


def deliver_webhook(delivery_id: uuid.UUID) -> Task:
    """Return the message of one attempt at delivery ``delivery_id``, now (the ops retry)."""
    return Task(DELIVER_WEBHOOK_TASK, (str(delivery_id),), WEBHOOKS_QUEUE)


#: A message :func:`send_after_commit` takes.
Message = Drain | Endpoints | Task

#: ``Session.info`` key of the messages waiting for the session's commit.
_OUTBOX = "broker.outbox"


def send_after_commit(session: Session, message: Message) -> None:
    """Send ``message`` once the database transaction ``session`` is in has committed.

    The one way Tally sends a message about what it writes, from routes,
    services, the drain and the CLI alike, so no message ever names work that
    does not exist (the pattern of pypi/warehouse's ``tasks.py``). Nothing is
    sent on rollback. The messages of one commit are merged: one drain signal
    (:class:`DrainSignaller`, so a commit never waits for Redis), one
    :func:`signal_endpoints` for every endpoint named, then each
    :class:`Task`. They are sent by ``shared.db``'s after-commit callbacks: on
    the after-commit thread for a lock holder (the drain), so a slow broker
    never holds the stream. A send that fails is logged and counted
    (``tally_publish_failures_total``) and does not stop the others: the
    stream's sweep and the delivery sweep send what it would have
    (docs/architecture.md, "The flow"); a reconciliation started by ops stays
    ``running``, and beat's scheduled one still runs.
    """
    outbox: list[Message] | None = session.info.get(_OUTBOX)
    if outbox is None:
        outbox = session.info[_OUTBOX] = []
        db.after_commit(session, functools.partial(_send_all, outbox))
    outbox.append(message)


def _send_all(outbox: list[Message]) -> None:
    """Send the messages one commit gathered, merged; log and go on past a failure."""
    if any(isinstance(message, Drain) for message in outbox):
        drain_signaller.signal()
    endpoints = sorted(
        {e for message in outbox if isinstance(message, Endpoints) for e in message.endpoint_ids}
    )
    sends: list[tuple[str, Callable[[], None]]] = []
    if endpoints:
        sends.append(("endpoints", functools.partial(signal_endpoints, endpoints)))
    for message in outbox:
        if isinstance(message, Task):
            sends.append((message.name, functools.partial(_send_task, message)))
    for name, send_one in sends:
        try:
            send_one()
        except Exception as error:  # the row is durable: a sweep sends it
            _log.warning("publish_failed", message=name, error=str(error))


def _send_task(task: Task) -> None:
    send(task.name, *task.args, queue=task.queue)
