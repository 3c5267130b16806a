"""``tally serve web|worker|beat``: exec the real server with arguments from ``shared.config``.

The Procfile runs these, so every process reads its settings in one place.
"""

from __future__ import annotations

import os
import sys

import click

from shared.config import get_settings


def _exec(*args: str) -> None:
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, *args])


@click.group("serve")
def serve() -> None:
    """Run one of Tally's processes in the foreground (used by the Procfile)."""


@serve.command("web")
def web() -> None:
    """Serve the API with gunicorn: gevent workers by default, so a long-poll holds no thread.

    ``TALLY_WEB_WORKER_CLASS=gthread`` serves with ``TALLY_WEB_THREADS`` threads
    per worker instead (docs/benchmarks.md compares the two). Keep-alive
    (``TALLY_WEB_KEEPALIVE_SECONDS``, 75 s as nginx) outlasts the idle time of
    common clients' pools (httpx 5 s, browsers and Go longer), so the server
    never closes a connection a client is about to reuse.
    """
    s = get_settings()
    if s.web_worker_class == "gevent":
        model = ["--worker-class", "gevent", "--worker-connections", str(s.web_connections)]
    else:
        model = ["--worker-class", "gthread", "--threads", str(s.web_threads)]
    _exec(
        "-m", "gunicorn", "--bind", f"{s.host}:{s.port}", "--workers", str(s.web_workers),
        *model, "--keep-alive", str(s.web_keepalive_seconds), "--timeout", "60",
        "--graceful-timeout", "20", "--no-control-socket", "--access-logfile", "-", "api.wsgi:app",
    )  # fmt: skip


@serve.command("worker")
def worker() -> None:
    """Run a Celery worker on the ``tally`` queue (prefork pool, acks late)."""
    s = get_settings()
    _exec(
        "-m", "celery", "-A", "worker.app", "worker", "--loglevel", s.log_level,
        "--concurrency", str(s.worker_concurrency), "-Q", "tally", "--without-gossip",
        "--without-mingle",
    )  # fmt: skip


@serve.command("beat")
def beat() -> None:
    """Run Celery beat with celery-redbeat's locked scheduler (one active beat at a time)."""
    s = get_settings()
    _exec("-m", "celery", "-A", "worker.app", "beat", "--loglevel", s.log_level)
