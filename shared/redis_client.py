"""The process's Redis client (redis-py) for what is not a Celery message: lane signals, readiness.

redis-py's connection pool notices a fork and reconnects in the child, so one
client per process is safe under Celery's prefork pool and gunicorn.
"""

from __future__ import annotations

import functools

import redis

from shared.config import get_settings


@functools.cache
def get_redis() -> redis.Redis:
    """Return a client for ``REDIS_URL`` with short timeouts (``broker_publish_timeout_seconds``)."""
    settings = get_settings()
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.broker_publish_timeout_seconds,
        socket_connect_timeout=settings.broker_publish_timeout_seconds,
    )
