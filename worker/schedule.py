"""The whole beat schedule, as one table; every interval comes from ``shared.config``."""

from __future__ import annotations

from typing import Any

from shared.config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Return Celery's ``beat_schedule`` for ``settings``.

    Every job is safe to run twice or concurrently (docs/maintenance.md).
    """
    return {
        "sweep-stalled-transactions": {
            "task": "tally.sweep_stalled_transactions",
            "schedule": settings.sweep_interval_seconds,
        },
    }
