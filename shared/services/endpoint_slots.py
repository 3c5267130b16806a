"""A counting semaphore per webhook endpoint, in Redis: at most N attempts in flight to one.

Each attempt holds a slot: a member of the endpoint's sorted set, scored by
when it expires. Taking one drops the expired members, then adds this one if
fewer than ``limit`` remain, in one Lua script (atomic on the server, one
round trip), with the server's clock, so workers on several hosts agree.
An attempt whose worker dies keeps its slot until the lease ends, as it
keeps its delivery (``TALLY_WEBHOOK_ATTEMPT_LEASE_SECONDS``). This is the
sorted-set counting semaphore of *Redis in Action* (J. Carlson, section 6.3,
"Counting semaphores"), without its fairness counter: a slot refused is not
queued, the delivery stays due and is sent again (docs/webhooks.md).
"""

from __future__ import annotations

import uuid
from typing import Any

_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def slots_key(endpoint_id: uuid.UUID | str) -> str:
    """Return the Redis key of endpoint ``endpoint_id``'s slots (a sorted set)."""
    return f"tally:endpoint-slots:{endpoint_id}"


class EndpointSlots:
    """Take and give back an endpoint's attempt slots.

    Args:
        redis: a redis-py client.
        limit: slots per endpoint (``TALLY_WEBHOOK_ENDPOINT_CONCURRENCY``).
        lease_seconds: how long an unreturned slot is held.
    """

    def __init__(self, redis: Any, *, limit: int, lease_seconds: float) -> None:
        self._redis, self._limit = redis, limit
        self._lease_ms = max(1, int(lease_seconds * 1000))
        self._acquire = redis.register_script(_ACQUIRE)

    def acquire(self, endpoint_id: uuid.UUID, holder: uuid.UUID) -> bool:
        """Take a slot of ``endpoint_id`` for ``holder`` (a delivery id); False when all are held."""
        args = [self._limit, self._lease_ms, str(holder)]
        return bool(self._acquire(keys=[slots_key(endpoint_id)], args=args))

    def release(self, endpoint_id: uuid.UUID, holder: uuid.UUID) -> None:
        """Give back ``holder``'s slot (nothing if it expired)."""
        self._redis.zrem(slots_key(endpoint_id), str(holder))

    def held(self, endpoint_id: uuid.UUID) -> int:
        """Return how many slots of ``endpoint_id`` are held, expired ones included."""
        return int(self._redis.zcard(slots_key(endpoint_id)))
