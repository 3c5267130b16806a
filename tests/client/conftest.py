"""Fixtures of the client tests: a real API process (``tally serve web``) and clients of it.

The API runs as production runs it, so long-polls park in its ASGI server and
a test may kill it; PostgreSQL and Redis are the session's (tests/conftest.py).
Transactions are applied by ``tests.helpers.drain_stream`` in the test's own
process, or by a real Celery worker where a module asks for ``worker``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tally_client import AsyncTally, Tally

from tests.pipeline.conftest import _no_webhook_endpoints_from_other_modules  # noqa: F401
from tests.servers import LOG_DIR, serve_web


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


@pytest.fixture
def async_tally(api_url: str, service_headers: dict[str, str]) -> AsyncTally:
    """Return an ``AsyncTally`` with a ``service`` key (each test closes it in its own loop)."""
    return AsyncTally(api_url, secret_of(service_headers))


class RecordingTransport(httpx.HTTPTransport):
    """An HTTP transport that records every request and answer, and can act between the two.

    ``exchanges`` holds ``(request, response or the error)`` in order; each
    exchange also sets ``sent``, so a test can await the first request. A
    subclass overrides :meth:`after` to act once the server has answered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[httpx.Request, Any]] = []
        self.sent = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Forward ``request``, record it with its answer, then call :meth:`after`."""
        try:
            response = super().handle_request(request)
            response.read()
        except httpx.TransportError as error:
            self.exchanges.append((request, error))
            self.sent.set()
            raise
        self.exchanges.append((request, response))
        self.sent.set()
        return self.after(request, response)

    def after(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """Return the answer the client sees; this one returns the server's."""
        return response

    def statuses(self) -> list[int | str]:
        """Return each exchange's status, or its error's class name."""
        return [
            outcome.status_code if isinstance(outcome, httpx.Response) else type(outcome).__name__
            for _, outcome in self.exchanges
        ]
