"""Run a WSGI app (Flask) under an ASGI server in a thread pool: one trip to a thread per request.

Kept apart from ``api.asgi`` so that it imports without building Tally's app
(``bench/floor`` serves its minimal app through it).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from a2wsgi.wsgi import build_environ

from shared.logs import flush_logs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class ThreadPoolWSGI:
    """Serve a WSGI app under ASGI: read the body on the loop, run the app in one trip to a thread.

    A request crosses between the event loop and the pool twice (there and
    back). a2wsgi's ``WSGIMiddleware`` crosses once for every message it
    receives or sends, and costs 400–500 µs more server CPU per request with
    the minimal app of ``bench/floor`` (docs/benchmarks.md, series 8). The WSGI
    environ is a2wsgi's (``a2wsgi.wsgi.build_environ``), so the two see a
    request alike. The answer is buffered whole: every answer of the API is a
    JSON document or a small static file.

    Args:
        wsgi_app: the WSGI app (Flask).
        threads: the pool's size (``TALLY_WEB_THREADS``): requests in the app at once.
        body_bytes_max: the longest body, in bytes, that any view accepts. The
            pool reads one byte more at most and hands that on, so a longer
            body is refused by the app (413) without being held whole.
    """

    def __init__(self, wsgi_app: WSGIApp, threads: int, body_bytes_max: int) -> None:
        self.wsgi_app = wsgi_app
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="flask")
        self.body_bytes_max = body_bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection event: an ``http`` request, or the ``lifespan``."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = bytearray()
        while len(body) <= self.body_bytes_max:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body arrived: nobody to answer
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        environ = build_environ(scope, io.BytesIO(bytes(body)))  # type: ignore[arg-type]
        # The body ends where the stream ends: without this werkzeug would read
        # a chunked body, which has no Content-Length, as empty (``get_input_stream``).
        environ["wsgi.input_terminated"] = True
        loop = asyncio.get_running_loop()
        status, headers, content = await loop.run_in_executor(self.pool, self._respond, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _respond(self, environ: dict[str, Any]) -> Response:
        """Run the WSGI app on ``environ`` in this thread; return its status, headers and body."""
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            started.append((status, headers))  # PEP 3333: a later call (with exc_info) replaces

        chunks = self.wsgi_app(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = started[-1]
        encoded = [
            (name.lower().encode("latin1"), value.encode("latin1")) for name, value in headers
        ]
        return int(status[:3]), encoded, content

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Answer the server's startup and shutdown; at shutdown, stop the pool and write the logs.

        Once the pool has finished every request, the lines they logged that
        still wait in a buffer (``shared.logs.BufferedLines``) are written
        before the server hears that the app has stopped: uvicorn ends a worker
        after its graceful shutdown by raising again the signal it caught
        (uvicorn's ``Server.capture_signals``), so the process dies of that
        signal and runs no ``atexit`` hook.
        """
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=True)
                flush_logs()
                await send({"type": "lifespan.shutdown.complete"})
                return
