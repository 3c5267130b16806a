"""The API's server entry point (``api.asgi:app``): Flask in a thread pool, long-polls parked.

uvicorn serves this ASGI app. Every request runs in the Flask app in a pool
of ``TALLY_WEB_THREADS`` threads per process (:class:`ThreadPoolWSGI`), except the
wait of a long-poll: ``GET /v1/transactions/{id}?wait=N`` is answered by
asking Flask once without the wait; if the transaction is still ``pending``,
the request parks on an ``asyncio.Event`` (no thread, no database connection)
until the worker announces the id on ``tally:settled`` or N seconds pass, and
then asks Flask once more. Flask keeps every rule (authentication, validation,
errors, rendering); this module only waits between two ordinary reads.
Likewise, an intake request that backpressure holds (the apply stream far
behind) waits here before it takes a thread (:class:`IntakePacing`).

Why uvicorn with this pool rather than another server or bridge:
docs/architecture.md, "Long-polls", and the floor in docs/benchmarks.md, series 8.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import redis.asyncio
import structlog

from api import create_app
from api.edge import largest_body_limit
from api.schemas import WAIT_SECONDS_MAX
from api.wsgi_pool import Message, Receive, Scope, Send, ThreadPoolWSGI
from shared.config import get_settings
from shared.heap import freeze_startup_objects
from shared.metrics import LONG_POLL_WAKEUPS
from shared.services import backpressure as intake_backpressure
from shared.wakeups import SETTLED_CHANNEL

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A transaction id in a path, as the routes take it (hex and dashes).
_ID = r"[0-9A-Fa-f-]{32,36}"
_TRANSACTION_PATH = re.compile(rf"^/v1/transactions/({_ID})$")
#: The requests that record transactions: submit, batch, capture, void, reverse.
_INTAKE_PATH = re.compile(rf"^/v1/transactions(/batch|/{_ID}/(capture|void|reverse))?$")
_log = structlog.get_logger(__name__)


class AsyncWaiters:
    """The events of the requests parked on each transaction id, fed by one subscriber task.

    The subscriber starts with the first parked request and reconnects every
    second while Redis is away; meanwhile parked requests answer at their deadline.
    """

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._subscriber: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, transaction_id: str) -> Iterator[asyncio.Event]:
        """Yield an event that is set when ``transaction_id`` is announced as settled."""
        if self._subscriber is None or self._subscriber.done():
            self._subscriber = asyncio.get_running_loop().create_task(self._subscribe())
        event = asyncio.Event()
        self._events.setdefault(transaction_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._events.get(transaction_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[transaction_id]

    async def _subscribe(self) -> None:
        settings = get_settings()
        while True:
            try:
                client = redis.asyncio.Redis.from_url(
                    settings.redis_url,
                    socket_connect_timeout=settings.broker_publish_timeout_seconds,
                    health_check_interval=30,
                )
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(SETTLED_CHANNEL)
                    async for message in pubsub.listen():
                        for transaction_id in message["data"].decode().split():
                            for event in self._events.get(transaction_id, ()):
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # parked requests still answer at their deadline
                _log.warning("waiters_subscription_lost", error=str(error))
                await asyncio.sleep(1.0)


def _wait_seconds(query_string: bytes) -> float | None:
    """Return a valid ``wait`` of the query string if above 0, else None (Flask judges the rest)."""
    values = urllib.parse.parse_qs(query_string.decode("ascii", "replace")).get("wait")
    if not values or len(values) != 1:
        return None
    try:
        seconds = float(values[0])
    except ValueError:
        return None
    return seconds if 0 < seconds <= WAIT_SECONDS_MAX else None


def _without_wait(query_string: bytes) -> bytes:
    """Return the query string with ``wait`` removed."""
    pairs = urllib.parse.parse_qsl(query_string.decode("ascii", "replace"), keep_blank_values=True)
    return urllib.parse.urlencode([(k, v) for k, v in pairs if k != "wait"]).encode()


def _ascii_query(query_string: bytes) -> bytes:
    """Percent-encode bytes above 0x7F, which a WSGI environ cannot carry (PEP 3333).

    The edge (``api.edge``) then judges them as it judges ``%FF``: a 400, not a crash.
    """
    if query_string.isascii():
        return query_string
    return b"".join(bytes([b]) if b < 0x80 else b"%%%02X" % b for b in query_string)


class _Captured:
    """An ASGI response held back: its start message and its body."""

    def __init__(self) -> None:
        self.start: Message | None = None
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def pending(self) -> bool:
        """Tell whether this is a 200 whose transaction is still ``pending``."""
        if self.start is None or self.start["status"] != 200:
            return False
        try:
            return bool(json.loads(self.body).get("status") == "pending")
        except ValueError:
            return False

    async def replay(self, send: Send) -> None:
        assert self.start is not None
        await send(self.start)
        await send({"type": "http.response.body", "body": bytes(self.body)})


class LongPollMiddleware:
    """Answer ``GET /v1/transactions/{id}?wait=N`` by parking between two reads of the inner app.

    Args:
        inner: the ASGI app that answers every request (Flask in :class:`ThreadPoolWSGI`).
        waiters: where parked requests wait for the settled announcement.
    """

    def __init__(self, inner: ASGIApp, waiters: AsyncWaiters) -> None:
        self.inner = inner
        self.waiters = waiters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection event (``http`` requests; ``lifespan`` is passed on)."""
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        scope["query_string"] = _ascii_query(scope.get("query_string", b""))
        match = _TRANSACTION_PATH.match(scope["path"]) if scope["method"] == "GET" else None
        wait_seconds = _wait_seconds(scope["query_string"]) if match is not None else None
        if match is None or wait_seconds is None:
            await self.inner(scope, receive, send)
            return
        read = {**scope, "query_string": _without_wait(scope["query_string"])}
        with self.waiters.watch(match.group(1).lower()) as settled:  # before the first read
            first = _Captured()
            await self.inner(read, _no_body, first.send)
            if not first.pending():
                await first.replay(send)
                return
            try:
                await asyncio.wait_for(settled.wait(), wait_seconds)
                LONG_POLL_WAKEUPS.labels("announced").inc()
            except TimeoutError:
                LONG_POLL_WAKEUPS.labels("deadline").inc()
        await self.inner(dict(read), _no_body, send)


async def _no_body() -> Message:
    """Receive an empty request body: a GET has none, and each read must see the same."""
    return {"type": "http.request", "body": b"", "more_body": False}


class IntakePacing:
    """Hold intake requests outside the thread pool while the apply stream is far behind.

    ``shared.services.backpressure`` makes a recording wait while its process
    is too far ahead of the apply stream. Waiting in the Flask thread would
    hold a thread of the pool per held request, and with as many held as the
    pool has threads, reads of the same process would wait for one too. So
    an intake request that would wait is held here first, on the event loop:
    its wait runs in one thread of its own for all of them, one at a time
    (``Backpressure.admit``), and only then does the request go to the pool.
    A request that would not wait costs one comparison. The Flask view asks
    again as its recording starts (a burst let go together may be over
    again), so the bound holds whether or not this layer is in front.

    Args:
        inner: the ASGI app that answers every request.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner
        self._waiting = ThreadPoolExecutor(1, thread_name_prefix="backpressure")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection event; hold an intake ``POST`` while backpressure says wait."""
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and _INTAKE_PATH.match(scope["path"]) is not None
        ):
            backpressure = intake_backpressure.for_this_process()
            if backpressure.over():
                await asyncio.get_running_loop().run_in_executor(self._waiting, backpressure.admit)
        await self.inner(scope, receive, send)


def create_asgi_app() -> ASGIApp:
    """Return the API as an ASGI app: Flask in ``TALLY_WEB_THREADS`` threads, waits parked."""
    flask_app = create_app()
    threads = ThreadPoolWSGI(flask_app, get_settings().web_threads, largest_body_limit(flask_app))
    return LongPollMiddleware(IntakePacing(threads), AsyncWaiters())


app = create_asgi_app()
# Imports and the app live as long as the process: out of the collector's full sweeps.
freeze_startup_objects()
