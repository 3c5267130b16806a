"""Backoff for transient failures: exponential, capped, with equal jitter.

Equal jitter (a uniform draw between half the capped exponential and all of
it) spreads retries of many workers apart without ever retrying at once; see
AWS Architecture Blog, "Exponential Backoff And Jitter" (2015).
"""

from __future__ import annotations

import random


def backoff_seconds(retry: int, *, base_seconds: float, max_seconds: float) -> float:
    """Return how long to wait before retry number ``retry`` (0-based), in seconds.

    The wait is drawn uniformly from ``[cap / 2, cap]`` with
    ``cap = min(max_seconds, base_seconds * 2**retry)``: jittered, but never
    near zero, so a database that is down is not hammered.
    """
    cap = min(max_seconds, base_seconds * 2 ** min(retry, 32))
    return random.uniform(cap / 2, cap)
