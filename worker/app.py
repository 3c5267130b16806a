"""The Celery app, built from ``shared.config``.

Settings that matter for correctness (docs/architecture.md, "Celery settings"; Celery docs, "Configuration
and defaults"): ``task_acks_late`` with ``task_reject_on_worker_lost`` so a
message whose worker died is delivered again; ``worker_prefetch_multiplier=1``
so a dying worker strands as few messages as possible; a Redis
``visibility_timeout`` longer than the longest retry countdown (kombu#337,
celery#5935); JSON only. Beat uses celery-redbeat, whose Redis lock keeps a
single scheduler; ``redbeat_lock_timeout`` is short so a standby beat takes
over quickly. redbeat's beat exits when its lock is lost (Redis emptied, or
down longer than the lock timeout) and re-creates its entries only when it
starts: whatever runs beat must restart it (``tally up`` runs it under
supervisord; docker-compose.yml with ``restart:``).
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_before_create_process, worker_process_init

import broker
from shared.config import get_settings
from shared.heap import freeze_startup_objects
from shared.logs import configure_logging
from worker.schedule import beat_schedule


def create_celery_app() -> Celery:
    """Return the Celery app configured from the environment."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = Celery(
        "tally",
        broker=settings.redis_url,
        include=["worker.tasks", "worker.maintenance_tasks", "worker.webhook_tasks"],
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=broker.QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix="tally:redbeat",
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        # Every tick extends the lock, so ticks at most a third of the lock timeout
        # apart leave two missed ticks before a standby may take over. The interval
        # also bounds how long a beat takes to notice a lost lock (Redis emptied)
        # and exit so that its supervisor restarts it (redbeat #218, #230):
        # docs/operations.md, "Process supervision".
        beat_max_loop_interval=min(5, settings.beat_lock_timeout_seconds // 3),
        timezone="UTC",
    )
    return app


app = create_celery_app()

# Connects the signal handlers that time and count beat's jobs.
from worker import observe as _observe  # noqa: E402, F401


@worker_process_init.connect
def _fresh_engine_per_child(**_: object) -> None:
    """Drop any engine inherited from the parent: pooled connections must not cross a fork."""
    from shared.db import reset_engine

    reset_engine()


@worker_before_create_process.connect
def _freeze_before_fork(**_: object) -> None:
    """Freeze the parent's imports and app just before it forks a pool process (``shared.heap``)."""
    freeze_startup_objects()
