"""``AsyncTally``: the asyncio client, on ``httpx.AsyncClient``, with ``Tally``'s surface.

As ``Tally`` does, it only sends what the shared surface builds (``_resources``,
``_calls``) and sleeps between retries; every decision is the shared core's
(``_core``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx

from tally_client._calls import Pages, Steps
from tally_client._core import Call, Core
from tally_client._resources import (
    Async,
    Client,
)
from tally_client.errors import TallyConnectionError

T = TypeVar("T")


class AsyncTally(Client[Async]):
    """An asyncio client of one Tally API: ``Tally``'s methods, awaited (lists: ``async for``).

    Takes ``Tally``'s arguments (``transport``: an httpx async transport) and
    raises its exceptions. Use it with ``async with``, or ``await aclose()``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        core = Core(base_url, api_key, timeout_seconds=timeout, max_retries=max_retries)
        super().__init__(
            core,
            httpx.AsyncClient(base_url=core.base_url, headers=core.headers, transport=transport),
        )

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the core's policy says; return its result.

        Raises:
            APIError: an error answer that is not retried, or the last one.
            TallyConnectionError: no answer after the last retry.
        """
        if call.pause_seconds > 0:
            await asyncio.sleep(call.pause_seconds)
        attempt = 0
        while True:
            request = self._http.build_request(**self._core.request_options(call))
            try:
                response = await self._http.send(request)
            except httpx.TransportError as error:
                delay = self._core.policy.delay_seconds(call, attempt, error=error)
                if delay is None:
                    raise TallyConnectionError(f"{call.method} {call.path}: {error!r}") from error
            else:
                delay = self._core.policy.delay_seconds(call, attempt, response=response)
                if delay is None:
                    return self._core.result(call, response)
            attempt += 1
            await asyncio.sleep(delay)

    async def paginate(self, pages: Pages[T]) -> AsyncIterator[T]:
        """Yield every item of a list, page after page, following ``next_cursor``."""
        cursor: str | None = None
        while True:
            page = await self.send(pages(cursor))
            for item in page.data:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def run_steps(self, steps: Steps[T]) -> T:
        """Send each call ``steps`` yields, passing back its result; return its outcome."""
        try:
            call = next(steps)
            while True:
                call = steps.send(await self.send(call))
        except StopIteration as done:
            result: T = done.value
            return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTally:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
