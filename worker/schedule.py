"""The whole beat schedule, as one table; every interval comes from ``shared.config``."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

import broker
from shared.config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Return Celery's ``beat_schedule`` for ``settings``.

    Every job is safe to run twice or concurrently (docs/maintenance.md).
    """
    return {
        "sweep-stalled-transactions": {
            "task": broker.SWEEP_STALLED_TASK,
            "schedule": settings.sweep_interval_seconds,
        },
        # Sends deliveries whose retry is due or whose message was lost.
        "sweep-webhook-deliveries": {
            "task": broker.SWEEP_WEBHOOK_DELIVERIES_TASK,
            "schedule": settings.webhook_sweep_interval_seconds,
        },
        # Scheduled transactions whose time has come become pending.
        "release-scheduled-transactions": {
            "task": broker.RELEASE_SCHEDULED_TASK,
            "schedule": settings.schedule_interval_seconds,
        },
        "expire-holds": {
            "task": broker.EXPIRE_HOLDS_TASK,
            "schedule": settings.hold_expiry_interval_seconds,
        },
        # Snapshots of each closed UTC day; catches up missed days by itself.
        "take-snapshots": {
            "task": broker.TAKE_SNAPSHOTS_TASK,
            "schedule": crontab(
                hour=settings.snapshot_hour_utc, minute=settings.snapshot_minute_utc
            ),
        },
        "archive-entries": {
            "task": broker.ARCHIVE_ENTRIES_TASK,
            "schedule": settings.archive_interval_seconds,
        },
        # Deletes events past their retention, once their deliveries have ended.
        "prune-events": {
            "task": broker.PRUNE_EVENTS_TASK,
            "schedule": settings.archive_interval_seconds,
        },
        "reconcile": {
            "task": broker.RECONCILE_TASK,
            "schedule": settings.reconcile_interval_seconds,
        },
    }
