"""Fixtures of the client tests: a real API process (``tally serve web``) and clients of it.

The API runs as production runs it, so long-polls park in its ASGI server and
a test may kill it; PostgreSQL and Redis are the session's (tests/conftest.py).
Transactions are applied by ``tests.helpers.drain_stream`` in the test's own
process, or by a real Celery worker where a module asks for ``worker``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from tally_client import AsyncTally, Tally

from tests.pipeline.conftest import _no_webhook_endpoints_from_other_modules  # noqa: F401
from tests.servers import LOG_DIR, serve_web

T = TypeVar("T")


def secret_of(headers: dict[str, str]) -> str:
    """Return the API key in ``Authorization: Bearer <key>`` headers."""
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    """Run ``tally serve web`` for the module; yield its URL."""
    with serve_web(LOG_DIR) as (url, _process):
        yield url


@pytest.fixture
def tally(api_url: str, service_headers: dict[str, str]) -> Iterator[Tally]:
    """Yield a ``Tally`` client with a ``service`` key."""
    with Tally(api_url, secret_of(service_headers)) as client:
        yield client


@pytest.fixture
def tally_ops(api_url: str, ops_headers: dict[str, str]) -> Iterator[Tally]:
    """Yield a ``Tally`` client with an ``ops`` key."""
    with Tally(api_url, secret_of(ops_headers)) as client:
        yield client


class Recorder:
    """What a recording transport saw: every request and its answer (or error), in order.

    ``started`` is set when a request starts, ``answered`` when one ends.
    ``after(request, response)``, if given, runs once the server has answered
    and before the client sees it: it may act (kill the server) or raise a
    transport error (the answer was lost).
    """

    def __init__(
        self, after: Callable[[httpx.Request, httpx.Response], None] | None = None
    ) -> None:
        self.exchanges: list[tuple[httpx.Request, httpx.Response | httpx.TransportError]] = []
        self.started, self.answered = threading.Event(), threading.Event()
        self.after = after

    def record(
        self, request: httpx.Request, outcome: httpx.Response | httpx.TransportError
    ) -> None:
        """Keep one exchange; run ``after`` on an answer."""
        self.exchanges.append((request, outcome))
        self.answered.set()
        if self.after is not None and isinstance(outcome, httpx.Response):
            self.after(request, outcome)

    def statuses(self) -> list[int | str]:
        """Return each exchange's status, or its error's class name."""
        return [
            outcome.status_code if isinstance(outcome, httpx.Response) else type(outcome).__name__
            for _, outcome in self.exchanges
        ]


class RecordingTransport(httpx.HTTPTransport):
    """HTTP over TCP that tells a :class:`Recorder` every exchange."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Forward ``request`` and record it with its answer or error."""
        self.recorder.started.set()
        try:
            response = super().handle_request(request)
            response.read()
        except httpx.TransportError as error:
            self.recorder.record(request, error)
            raise
        self.recorder.record(request, response)
        return response


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    """:class:`RecordingTransport` for ``AsyncTally``."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward ``request`` and record it with its answer or error."""
        self.recorder.started.set()
        try:
            response = await super().handle_async_request(request)
            await response.aread()
        except httpx.TransportError as error:
            self.recorder.record(request, error)
            raise
        self.recorder.record(request, response)
        return response


FLAVORS = ["sync", "async"]


def run_in_own_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Return the result of the coroutine ``make()`` run on a new event loop in a thread of its
    own: the main thread may already run a loop (the browser tests' Playwright keeps one
    there for the session), and ``asyncio.run`` refuses to start inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def run_client(
    flavor: str,
    url: str,
    api_key: str,
    operation: Callable[[Any], Any],
    *,
    recorder: Recorder | None = None,
    max_retries: int = 5,
) -> Any:
    """Return ``operation(client)`` run with a ``Tally`` (``flavor`` ``sync``) or an ``AsyncTally``
    (``async``: awaited in a loop of its own), which sends through ``recorder``'s transport.

    ``operation`` calls the one surface both clients share, e.g.
    ``lambda c: c.transactions.get(id)``; for ``AsyncTally`` it returns the awaitable.
    """
    recorder = recorder or Recorder()
    if flavor == "sync":
        with Tally(
            url, api_key, max_retries=max_retries, transport=RecordingTransport(recorder)
        ) as client:
            return operation(client)

    async def run() -> Any:
        async with AsyncTally(
            url, api_key, max_retries=max_retries, transport=AsyncRecordingTransport(recorder)
        ) as client:
            return await operation(client)

    return run_in_own_loop(run)
