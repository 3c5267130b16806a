"""``api.wsgi_pool.ThreadPoolWSGI``: each request answered by a pool thread, errors included.

A WSGI app stands in for Flask; the ASGI side is driven as uvicorn drives it
(one ``http`` scope per request, then the ``lifespan`` shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import pytest

from api.wsgi_pool import Message, ThreadPoolWSGI
from shared.logs import BufferedLines

T = TypeVar("T")

#: How long a request may go unanswered before the test fails, in seconds.
ANSWER_SECONDS_MAX = 60


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer with the request's path and the thread that ran it; fail on ``/fail``."""
    if environ["PATH_INFO"] == "/fail":
        raise LookupError("the app failed")
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thread", "yes")])
    return [environ["PATH_INFO"].encode(), b" ", threading.current_thread().name.encode()]


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"tally")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip


async def _request(pool: ThreadPoolWSGI, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    # Bounded, so that a request nobody answers fails the test instead of hanging it.
    await asyncio.wait_for(pool(_scope(path), receive, send), ANSWER_SECONDS_MAX)
    return sent


def _run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``scenario`` on an event loop of its own in a thread of its own.

    Another test of the session may leave a loop running in the main thread
    (Playwright's sync API does), where ``asyncio.run`` refuses to start.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, scenario()).result()


async def _shut_down(pool: ThreadPoolWSGI) -> list[Message]:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await pool({"type": "lifespan"}, receive, send)
    return sent


def test_requests_are_answered_by_the_pool_threads_and_the_lifespan_completes() -> None:
    pool = ThreadPoolWSGI(_app, 3, body_bytes_max=1024)

    async def scenario() -> tuple[list[list[Message]], list[Message]]:
        answers = await asyncio.gather(*(_request(pool, f"/{n}") for n in range(20)))
        return answers, await _shut_down(pool)

    answers, lifespan = _run(scenario)
    for n, (start, body) in enumerate(answers):
        assert start["status"] == 201
        assert (b"x-thread", b"yes") in start["headers"]
        path, _, thread = body["body"].decode().partition(" ")
        assert path == f"/{n}" and thread.startswith("flask_")
    assert [m["type"] for m in lifespan] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_an_app_that_raises_fails_its_request_only_and_the_thread_goes_on() -> None:
    pool = ThreadPoolWSGI(_app, 1, body_bytes_max=1024)

    async def scenario() -> list[Message]:
        with pytest.raises(LookupError, match="the app failed"):
            await _request(pool, "/fail")
        answered = await _request(pool, "/after")  # the one thread still serves
        await _shut_down(pool)
        return answered

    start, body = _run(scenario)
    assert start["status"] == 201
    assert body["body"].startswith(b"/after ")


def test_the_lines_of_finished_requests_are_written_before_the_shutdown_completes() -> None:
    stream = io.StringIO()
    lines = BufferedLines(stream, 3600.0)  # no timed write during the test
    written_at_completion: list[str] = []

    def logging_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        lines.write(f"served {environ['PATH_INFO']}")
        start_response("200 OK", [])
        return [b""]

    pool = ThreadPoolWSGI(logging_app, 2, body_bytes_max=1024)

    async def scenario() -> None:
        await asyncio.gather(*(_request(pool, f"/{n}") for n in range(5)))
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> Message:
            return next(messages)

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                written_at_completion.append(stream.getvalue())

        await pool({"type": "lifespan"}, receive, send)

    _run(scenario)
    (at_completion,) = written_at_completion
    assert sorted(at_completion.splitlines()) == sorted(f"served /{n}" for n in range(5))
