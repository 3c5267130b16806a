"""Daily balance snapshots: each wallet's balance at the end of each closed UTC day.

A snapshot row ``(wallet_id, day, balance_minor, last_sequence)`` says "after
entry ``last_sequence``, the wallet's last entry created on ``day`` (UTC),
its balance was ``balance_minor``". Rows exist only for the days on which the
wallet had entries: a day without entries carries the previous row forward,
so storage grows with activity, not with wallets times days. Every reader
(point-in-time balances, reconciliation, the archive) works from "the nearest
snapshot, plus the entries with a higher ``sequence``", which gives the same
answer whichever snapshot it starts from.

Why a snapshot is always exact even when an entry commits late (created at
23:59:59.9, committed after midnight, after the job ran): a wallet's entries
are written under its row lock, so the committed ones are always the prefix
``1..n`` of its sequence. A snapshot therefore records the balance after a
true prefix, and the late entry is simply "after" it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared import db
from shared.config import get_settings

#: Wallets per statement: bounds each statement's work and the rows it sorts.
WALLET_BATCH_SIZE = 2000

#: ``pg_advisory_xact_lock`` key that serialises snapshot runs (any constant unique to the job).
SNAPSHOT_LOCK_KEY = 7_361_727

_SNAPSHOT_BATCH = text(
    """
    WITH batch AS (
        SELECT id FROM wallets WHERE id > :after ORDER BY id LIMIT :batch_size
    ), since AS (
        SELECT b.id AS wallet_id, coalesce(s.last_sequence, 0) AS last_sequence
        FROM batch b
        LEFT JOIN LATERAL (
            SELECT last_sequence FROM balance_snapshots
            WHERE wallet_id = b.id ORDER BY day DESC LIMIT 1
        ) s ON true
    ), fresh AS (
        SELECT e.wallet_id, e.sequence, e.balance_after_minor, e.created_at
        FROM since JOIN ledger_entries_all e
          ON e.wallet_id = since.wallet_id AND e.sequence > since.last_sequence
        WHERE e.created_at < :end_at
    ), inserted AS (
        INSERT INTO balance_snapshots (wallet_id, day, balance_minor, last_sequence)
        SELECT DISTINCT ON (wallet_id, (created_at AT TIME ZONE 'UTC')::date)
               wallet_id, (created_at AT TIME ZONE 'UTC')::date, balance_after_minor, sequence
        FROM fresh
        ORDER BY wallet_id, (created_at AT TIME ZONE 'UTC')::date, sequence DESC
        ON CONFLICT (wallet_id, day) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id,
           (SELECT count(*) FROM batch) AS wallets,
           (SELECT count(*) FROM inserted) AS created
    """
)


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """What one :func:`take_snapshots` call did.

    Attributes:
        through_day: the last UTC day covered (days after it are left for later runs).
        wallets_scanned: wallets looked at.
        snapshots_created: rows inserted; 0 when every closed day was already done.
    """

    through_day: dt.date
    wallets_scanned: int
    snapshots_created: int


def utc_today(session: Session) -> dt.date:
    """Return the database clock's current UTC date (the day not yet closed)."""
    today: dt.date = session.execute(text("SELECT (now() AT TIME ZONE 'UTC')::date")).scalar_one()
    return today


def set_maintenance_timeouts(session: Session) -> None:
    """Raise ``statement_timeout`` and ``lock_timeout`` for this database transaction only.

    The values the engine sets suit the short apply path; a maintenance job's
    statements scan much of the ledger and may wait for a concurrent copy
    (``TALLY_MAINTENANCE_TIMEOUT_SECONDS``, default 30 minutes).
    """
    timeout_ms = str(int(get_settings().maintenance_timeout_seconds * 1000))
    db.set_local(session, statement_timeout=timeout_ms, lock_timeout=timeout_ms)


def take_snapshots(session: Session, *, through_day: dt.date | None = None) -> SnapshotSummary:
    """Snapshot every wallet for every closed UTC day up to ``through_day`` that lacks one.

    Catches up any number of missed days in one call (beat does not replay
    missed slots). Set-based: wallets are visited in id order, a batch per
    statement, and no wallet or entry is loaded into Python. Idempotent
    (``ON CONFLICT DO NOTHING``: a second run creates nothing). Concurrent
    runs are serialised by a transaction-scoped advisory lock, so the second
    waits for the first to commit and then finds nothing to do.

    Args:
        session: the database transaction to write in; the caller commits.
        through_day: the last day to snapshot; None, or any day not yet closed,
            means yesterday (UTC, by the database clock).

    Returns:
        A :class:`SnapshotSummary`.
    """
    set_maintenance_timeouts(session)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SNAPSHOT_LOCK_KEY})
    last_closed_day = utc_today(session) - dt.timedelta(days=1)
    day = last_closed_day if through_day is None else min(through_day, last_closed_day)
    end_at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    after = uuid.UUID(int=0)
    wallets = created = 0
    while True:
        row = session.execute(
            _SNAPSHOT_BATCH,
            {"after": after, "batch_size": WALLET_BATCH_SIZE, "end_at": end_at},
        ).one()
        if row.last_id is None:
            break
        wallets += row.wallets
        created += row.created
        after = row.last_id
    return SnapshotSummary(through_day=day, wallets_scanned=wallets, snapshots_created=created)
