"""The process's Redis client (redis-py) for what is not a Celery message: lane signals, readiness.

redis-py's connection pool notices a fork and reconnects in the child, so one
client per process is safe under Celery's prefork pool and gunicorn.
"""

from __future__ import annotations

import functools

import redis

from shared.config import get_settings


@functools.cache
def get_redis(timeout_seconds: float | None = None) -> redis.Redis:
    """Return a client for ``REDIS_URL`` with short timeouts, one per timeout.

    Args:
        timeout_seconds: the connect and read timeout, in seconds; None:
            ``broker_publish_timeout_seconds``. A caller that must not hold a
            request for long (``shared.wakeups.read_applied_sequence``) passes less.
    """
    settings = get_settings()
    timeout = (
        settings.broker_publish_timeout_seconds if timeout_seconds is None else timeout_seconds
    )
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
