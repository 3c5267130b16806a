"""Structured logging (structlog): JSON lines in production, readable lines in a terminal.

``TALLY_LOG_FORMAT=json`` (the default) renders one JSON object per line for
log shippers; ``console`` renders structlog's ``ConsoleRenderer`` key=value
lines, which ``tally up`` uses. Both go to stderr and carry the context bound
with ``structlog.contextvars`` (the API binds ``request_id`` per request;
structlog docs, "Context Variables").

The API writes its lines through :class:`BufferedLines` (``TALLY_WEB_LOG_FLUSH_SECONDS``):
an info line is written with the others of the next few milliseconds, as
nginx's ``access_log ... buffer= flush=`` does, and a warning or error at
once, after every line before it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import TextIO

import structlog

from shared.redaction import install_masking_filters, mask_sensitive

#: Every live :class:`BufferedLines`, for the fork and exit hooks below.
_ALL: weakref.WeakSet[BufferedLines] = weakref.WeakSet()


class BufferedLines:
    """Log lines written to a stream together, at most ``flush_seconds`` after the first of them.

    Writing each line with its own ``write`` and ``flush`` (structlog's
    ``PrintLogger``) costs every request a system call under a lock that all
    of the process's threads share. Here a line joins a buffer, and one thread
    writes what gathered ``flush_seconds`` after the first line of it, in one
    call, outside the lock that logging threads take; a warning or error
    line, or a buffer of ``bytes_max`` characters, is written at once with
    every line before it.
    Lines keep the order in which they were logged. At a normal exit the
    buffer is written (``atexit``); a process killed outright loses at most
    ``flush_seconds`` of info lines, never a warning (a process that dies of
    a signal runs no ``atexit`` hook, so servers call :func:`flush_logs` at
    their shutdown: ``api.wsgi_pool.ThreadPoolWSGI``'s lifespan). A forked child starts
    with an empty buffer, so no line is written twice. The standard library's
    ``logging.handlers.MemoryHandler`` flushes by count and level only, never
    by time, so a quiet API's lines could wait indefinitely there.

    Args:
        stream: where lines go (the process's stderr).
        flush_seconds: the longest an info line waits, in seconds (> 0).
        bytes_max: characters buffered before a write regardless of time.
    """

    def __init__(self, stream: TextIO, flush_seconds: float, *, bytes_max: int = 64 * 1024) -> None:
        if flush_seconds <= 0:
            raise ValueError("flush_seconds must be positive; use PrintLogger for no buffer")
        self._stream = stream
        self._flush_seconds = flush_seconds
        self._bytes_max = bytes_max
        self._reset()
        _ALL.add(self)

    def _reset(self) -> None:
        #: Guards the buffer only: a thread that logs never waits for a write to the stream.
        self._lock = threading.Lock()
        #: Held across taking the buffer and writing it, so that writes keep the lines' order.
        self._write_lock = threading.Lock()
        self._lines: list[str] = []
        self._size = 0
        self._pending = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, line: str, *, at_once: bool = False) -> None:
        """Buffer ``line`` (without its newline); write the buffer now if ``at_once`` or full.

        With ``at_once`` the call returns once ``line`` and every line before it are written.
        """
        with self._lock:
            self._lines.append(line)
            self._size += len(line) + 1
            now = at_once or self._size >= self._bytes_max
            if not now and len(self._lines) == 1:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="log-flush", daemon=True)
                    self._thread.start()
                self._pending.set()
        if now:
            self.flush()

    def flush(self) -> None:
        """Write every buffered line now; return once they are written.

        The buffer is taken under its lock and written outside it: a stream
        that blocks (a full pipe to a slow supervisor) holds back the writer,
        never a request thread logging its line meanwhile.
        """
        with self._write_lock:
            with self._lock:
                if not self._lines:
                    return
                lines, self._lines, self._size = self._lines, [], 0
                self._pending.clear()
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: a log line must never fail the caller

    def _run(self) -> None:
        pending = self._pending
        while True:
            pending.wait()
            # Lines logged meanwhile join the same write.
            time.sleep(self._flush_seconds)
            self.flush()

    def logger(self, *_args: object) -> _BufferedLogger:
        """structlog's logger factory: a logger writing through this buffer."""
        return _BufferedLogger(self)


class _BufferedLogger:
    """The structlog logger of :class:`BufferedLines`: one method per level name."""

    __slots__ = ("_lines",)

    def __init__(self, lines: BufferedLines) -> None:
        self._lines = lines

    def msg(self, message: str) -> None:
        self._lines.write(message)

    def at_once(self, message: str) -> None:
        self._lines.write(message, at_once=True)

    log = debug = info = msg
    warning = warn = error = err = exception = critical = fatal = failure = at_once


def _after_fork_in_child() -> None:
    for lines in list(_ALL):
        lines._reset()  # noqa: SLF001 - the parent's buffer and thread are not the child's


def flush_logs() -> None:
    """Write every buffered log line of this process now (a server's shutdown calls it).

    ``atexit`` calls it too, but a process that dies of a signal runs no
    ``atexit`` hook: uvicorn's workers end that way after a graceful shutdown.
    """
    for lines in list(_ALL):
        lines.flush()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush_logs)


def configure_logging(level: str, log_format: str = "json", *, flush_seconds: float = 0.0) -> None:
    """Route structlog and the standard ``logging`` module to stderr, as JSON or console lines.

    Args:
        level: a standard level name (``"INFO"``); ``shared.config`` validates it.
        log_format: ``"json"`` or ``"console"`` (``TALLY_LOG_FORMAT``).
        flush_seconds: 0 writes each structlog line at once; above 0, info
            lines are written together through :class:`BufferedLines` at most
            that many seconds late (``TALLY_WEB_LOG_FLUSH_SECONDS``, the API).
            The standard library's lines are always written at once.
    """
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    install_masking_filters()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # The console renderer prints tracebacks itself; JSON needs them as text.
            *([] if log_format == "console" else [structlog.processors.format_exc_info]),
            # Owner references and secrets never reach a log in clear (shared/redaction.py).
            mask_sensitive,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=(
            BufferedLines(sys.stderr, flush_seconds).logger
            if flush_seconds > 0
            else structlog.PrintLoggerFactory(file=sys.stderr)
        ),
        cache_logger_on_first_use=True,
    )
