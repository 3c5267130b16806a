"""Backoff: exponential, capped, jittered, never near zero."""

from __future__ import annotations

import pytest

from shared.retry import backoff_seconds


@pytest.mark.parametrize("retry", range(0, 12))
def test_backoff_seconds_stays_within_half_and_full_cap(retry: int) -> None:
    cap = min(30.0, 0.5 * 2**retry)
    for _ in range(50):
        assert cap / 2 <= backoff_seconds(retry, base_seconds=0.5, max_seconds=30.0) <= cap


def test_backoff_seconds_handles_huge_retry_counts() -> None:
    assert backoff_seconds(10_000, base_seconds=1, max_seconds=5) <= 5
