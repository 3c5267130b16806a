"""Structured logging (structlog): JSON lines in production, readable lines in a terminal.

``TALLY_LOG_FORMAT=json`` (the default) renders one JSON object per line for
log shippers; ``console`` renders structlog's ``ConsoleRenderer`` key=value
lines, which ``tally up`` uses. Both go to stderr and carry the context bound
with ``structlog.contextvars`` (the API binds ``request_id`` per request;
structlog docs, "Context Variables").
"""

from __future__ import annotations

import logging
import sys

import structlog

from shared.redaction import install_masking_filters, mask_sensitive


def configure_logging(level: str, log_format: str = "json") -> None:
    """Route structlog and the standard ``logging`` module to stderr, as JSON or console lines.

    Args:
        level: a standard level name (``"INFO"``); ``shared.config`` validates it.
        log_format: ``"json"`` or ``"console"`` (``TALLY_LOG_FORMAT``).
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
