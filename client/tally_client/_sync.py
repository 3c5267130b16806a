"""``Tally``: the synchronous client, on ``httpx.Client``.

It only sends what the shared surface builds (``_resources``, ``_calls``) and
sleeps between retries; every decision (what to send, whether to retry, how
to read the answer) is the shared core's (``_core``), so ``AsyncTally``
behaves the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx

from tally_client._calls import Pages, Steps
from tally_client._core import Call, Core
from tally_client._resources import (
    Client,
    Sync,
)
from tally_client.errors import TallyConnectionError

T = TypeVar("T")


class Tally(Client[Sync]):
    """A synchronous client of one Tally API.

    Args:
        base_url: the API's origin, e.g. ``http://127.0.0.1:8000``.
        api_key: a ``service`` or ``ops`` key.
        timeout: seconds each attempt may take to connect, send or read
            (a long-poll adds its ``wait``).
        max_retries: retries after the first attempt of a call whose
            connection failed or that was answered ``429`` or ``503``.
        transport: an httpx transport to send through (default: HTTP over TCP).

    Resources: ``wallets``, ``transactions``, ``balance_monitors``, ``reconciliations``,
    ``webhook_endpoints``, ``events``, ``audit_events``. Use it as a context
    manager, or call :meth:`close`. Every method raises
    :class:`~tally_client.errors.APIError` (by status) for an error answer and
    :class:`~tally_client.errors.TallyConnectionError` when the API stayed
    unreachable.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        core = Core(base_url, api_key, timeout_seconds=timeout, max_retries=max_retries)
        super().__init__(
            core, httpx.Client(base_url=core.base_url, headers=core.headers, transport=transport)
        )

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the core's policy says; return its result.

        Raises:
            APIError: an error answer that is not retried, or the last one.
            TallyConnectionError: no answer after the last retry.
        """
        if call.pause_seconds > 0:
            time.sleep(call.pause_seconds)
        attempt = 0
        while True:
            request = self._http.build_request(**self._core.request_options(call))
            try:
                response = self._http.send(request)
            except httpx.TransportError as error:
                delay = self._core.policy.delay_seconds(call, attempt, error=error)
                if delay is None:
                    raise TallyConnectionError(f"{call.method} {call.path}: {error!r}") from error
            else:
                delay = self._core.policy.delay_seconds(call, attempt, response=response)
                if delay is None:
                    return self._core.result(call, response)
            attempt += 1
            time.sleep(delay)

    def paginate(self, pages: Pages[T]) -> Iterator[T]:
        """Yield every item of a list, page after page, following ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = self.send(pages(cursor))
            yield from page.data
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def run_steps(self, steps: Steps[T]) -> T:
        """Send each call ``steps`` yields, passing back its result; return its outcome."""
        try:
            call = next(steps)
            while True:
                call = steps.send(self.send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
