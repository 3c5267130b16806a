"""Thin beat tasks for maintenance: snapshots, archive, reconciliation (docs/maintenance.md).

Each opens its transactions through the service it calls and holds no rule of
its own. Every one is idempotent and safe to run twice or concurrently, which
is what beat needs: missed slots are not replayed (the snapshot job catches up
by itself), and a due entry may fire on two schedulers during a lock handover.
"""

from __future__ import annotations

import datetime as dt
import uuid

import structlog
from celery import shared_task

import broker
from shared import db
from shared.config import get_settings
from shared.metrics import RECONCILIATION_MISMATCHES, RECONCILIATION_RUNS
from shared.services import archive, events, reconciliation, snapshots

_log = structlog.get_logger(__name__)


@shared_task(name=broker.TAKE_SNAPSHOTS_TASK)
def take_snapshots() -> int:
    """Snapshot every closed UTC day not yet snapshotted; return how many rows were created."""
    with db.transaction() as session:
        summary = snapshots.take_snapshots(session)
    _log.info(
        "snapshots",
        through_day=summary.through_day.isoformat(),
        wallets_scanned=summary.wallets_scanned,
        snapshots_created=summary.snapshots_created,
    )
    return summary.snapshots_created


@shared_task(name=broker.ARCHIVE_ENTRIES_TASK)
def archive_entries() -> int:
    """Archive entries and terminal transactions older than ``TALLY_ARCHIVE_AFTER_DAYS``.

    Returns the number of entries moved; chunks of ``TALLY_ARCHIVE_CHUNK_SIZE`` rows.
    """
    settings = get_settings()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.archive_after_days)
    summary = archive.archive_before(cutoff=cutoff, chunk_size=settings.archive_chunk_size)
    return summary.entries_archived


@shared_task(name=broker.PRUNE_EVENTS_TASK)
def prune_events() -> int:
    """Delete events older than ``TALLY_EVENT_RETENTION_DAYS`` whose deliveries have ended.

    Returns how many events went; chunks of ``TALLY_ARCHIVE_CHUNK_SIZE``.
    """
    settings = get_settings()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.event_retention_days)
    pruned = events.prune_events(cutoff=cutoff, chunk_size=settings.archive_chunk_size)
    _log.info("events_pruned", events=pruned, cutoff=cutoff.isoformat())
    return pruned


@shared_task(name=broker.RECONCILE_TASK)
def reconcile(run_id: str | None = None) -> str:
    """Run reconciliation ``run_id`` (a UUID string from the ops API), or a new run; return its status.

    Counts the run by status and its mismatched wallets (``tally_reconciliation_*``).
    """
    if run_id is None:
        with db.transaction() as session:
            run_uuid = reconciliation.start_reconciliation(session)
    else:
        run_uuid = uuid.UUID(run_id)
    run = reconciliation.run_reconciliation(run_uuid)
    RECONCILIATION_RUNS.labels(run.status).inc()
    RECONCILIATION_MISMATCHES.inc(len(run.mismatches or ()))
    return run.status
