"""``tally serve web|worker|beat``: exec the real server with arguments from ``shared.config``.

The Procfile runs these, so every process reads its settings in one place.
``worker``, ``webhooks`` and ``beat`` first lower their CPU priority by
``TALLY_BACKGROUND_NICE`` so that the API's requests take a core first
(docs/operations.md, "Process priorities").
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

import broker
from shared.config import get_settings
from shared.metrics import fresh_multiprocess_dir


def _exec(*args: str, nice: int = 0) -> None:
    sys.stdout.flush()
    if nice:
        os.nice(nice)  # kept across exec and by every child process
    os.execvp(sys.executable, [sys.executable, *args])


@click.group("serve")
def serve() -> None:
    """Run one of Tally's processes in the foreground (used by the Procfile)."""


@serve.command("web")
def web() -> None:
    """Serve the API with uvicorn (``api.asgi:app``): Flask in a thread pool, long-polls parked.

    ``TALLY_WEB_WORKERS`` processes, each running Flask in ``TALLY_WEB_THREADS``
    threads; a long-poll waits on an event, not a thread (api/asgi.py).
    Keep-alive (``TALLY_WEB_KEEPALIVE_SECONDS``, 75 s as nginx) outlasts the
    idle time of common clients' pools (httpx 5 s, browsers and Go longer), so
    the server never closes a connection a client is about to reuse. With more
    than one process and no ``PROMETHEUS_MULTIPROC_DIR``, the processes share
    ``<temp dir>/tally-web-metrics-<port>``, emptied here at each start.
    """
    s = get_settings()
    if s.web_workers > 1 and not s.prometheus_multiproc_dir:
        # Each scrape of /metrics reaches one of the processes: without a directory
        # they share, each would answer with its own counts, and counters would seem
        # to jump back and forth between scrapes.
        metrics_dir = Path(tempfile.gettempdir()) / f"tally-web-metrics-{s.port}"
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_multiprocess_dir(metrics_dir))
    _exec(
        "-m", "uvicorn", "api.asgi:app", "--host", s.host, "--port", str(s.port),
        "--workers", str(s.web_workers), "--timeout-keep-alive", str(s.web_keepalive_seconds),
        "--timeout-graceful-shutdown", "20", "--no-server-header",
        # api/observe.py logs each request as a structured line instead.
        "--no-access-log",
    )  # fmt: skip


@serve.command("worker")
def worker() -> None:
    """Run a Celery worker on the ``tally`` queue: drains, sweeps, maintenance (prefork, acks late).

    Webhook attempts are not taken here: ``tally serve webhooks`` runs them in a
    process of its own, so a slow receiver never holds a process that drains
    (docs/webhooks.md).
    """
    s = get_settings()
    _exec(
        "-m", "celery", "-A", "worker.app", "worker", "--loglevel", s.log_level,
        "--concurrency", str(s.worker_concurrency), "-Q", broker.QUEUE, "--without-gossip",
        "--without-mingle", nice=s.background_nice,
    )  # fmt: skip


@serve.command("webhooks")
def webhooks() -> None:
    """Run a Celery worker on the webhooks queue (``broker.WEBHOOKS_QUEUE``) alone: webhook delivery attempts.

    A thread pool of ``TALLY_WEBHOOK_CONCURRENCY`` threads (Celery's
    ``--pool threads``): an attempt spends its time waiting on the receiver
    (up to ``TALLY_WEBHOOK_TIMEOUT_SECONDS``), so threads, not processes, are
    what many slow receivers need, and none of them is a process that drains.
    """
    s = get_settings()
    _exec(
        "-m", "celery", "-A", "worker.app", "worker", "--loglevel", s.log_level,
        "--pool", "threads", "--concurrency", str(s.webhook_concurrency),
        "-Q", broker.WEBHOOKS_QUEUE, "-n", "webhooks@%h", "--without-gossip", "--without-mingle",
        nice=s.background_nice,
    )  # fmt: skip


@serve.command("flower")
def flower() -> None:
    """Run Flower, Celery's monitor, on ``TALLY_HOST``:``TALLY_FLOWER_PORT`` against the broker.

    Flower asks the workers over the broker (``celery inspect``, which works
    with the workers' ``--without-gossip --without-mingle``) and turns on their
    task events while it runs (its ``--enable_events``, the default), so the
    workers send none when no Flower watches.
    """
    s = get_settings()
    _exec(
        "-m", "celery", "-A", "worker.app", "flower", f"--address={s.host}",
        f"--port={s.flower_port}",
    )  # fmt: skip


@serve.command("beat")
def beat() -> None:
    """Run Celery beat with celery-redbeat's locked scheduler (one active beat at a time)."""
    s = get_settings()
    _exec(
        "-m", "celery", "-A", "worker.app", "beat", "--loglevel", s.log_level,
        nice=s.background_nice,
    )  # fmt: skip
