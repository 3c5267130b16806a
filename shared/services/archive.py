"""The archive job: move old ledger entries and terminal transactions to archive tables.

Nothing is lost and no read changes (docs/maintenance.md): entries keep their
ids, sequences and ``balance_after`` in ``ledger_entries_archive``, and every
reader (entry history, point-in-time balances, snapshots, reconciliation)
reads the live and the archive table as one (the view ``ledger_entries_all``). Transactions move to
``transactions_archive`` only once they are terminal, older than the cutoff
and none of their entries is left in ``ledger_entries`` (whose foreign key
would forbid it), nor a reversal of them pending (it applies against the live
row); ``get_transaction`` falls back to the archive.

Each chunk is one database transaction that deletes up to ``chunk_size`` rows
from the live table and inserts them into the archive in the same statement
(``DELETE ... RETURNING`` feeding ``INSERT``), so a row is always in exactly
one of the two tables. Rows are picked ``FOR UPDATE SKIP LOCKED``: two copies
of the job running at once take disjoint rows, and neither waits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.states import TERMINAL_STATUSES
from shared.models import LedgerEntry, Transaction
from shared.services.snapshots import set_maintenance_timeouts, take_snapshots, utc_today

_log = structlog.get_logger(__name__)

#: Only these may move: nothing changes a terminal transaction any more (but see docs/maintenance.md
#: on ops retries of archived ``failed`` ones).
_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)

# The archive tables have the live tables' columns (tests/integration/test_archive.py checks it).
_ENTRY_COLUMNS = ", ".join(c.name for c in LedgerEntry.__table__.columns)
_TRANSACTION_COLUMNS = ", ".join(c.name for c in Transaction.__table__.columns)

# Both statements pick their rows in an inner ``ARRAY(SELECT ...)`` so that the
# DELETE is index lookups by id, never a hash join over the whole live table.
_MOVE_ENTRIES = text(
    f"""
    WITH moved AS (
        DELETE FROM ledger_entries
        WHERE id = ANY(ARRAY(
            SELECT id FROM ledger_entries
            WHERE id > :after_id AND id <= :bound_id AND created_at < :cutoff
            ORDER BY id
            LIMIT :chunk_size
            FOR UPDATE SKIP LOCKED
        ))
        RETURNING {_ENTRY_COLUMNS}
    ), kept AS (
        INSERT INTO ledger_entries_archive ({_ENTRY_COLUMNS})
        SELECT {_ENTRY_COLUMNS} FROM moved
        RETURNING id
    )
    SELECT max(id) AS last_id, count(*) AS moved FROM kept
    """
)

# The keyset walks every transaction older than the cutoff once per run (a
# window of ``chunk_size`` rows per chunk) and moves those of the window that
# may move; the "no live entry" test is a per-row index probe (a scalar
# subquery with LIMIT is never turned into a join over all entries).
_MOVE_TRANSACTIONS = text(
    f"""
    WITH batch AS MATERIALIZED (
        SELECT id, created_at FROM transactions
        WHERE (created_at, id) > (:after_created_at, :after_id) AND created_at < :cutoff
        ORDER BY created_at, id
        LIMIT :chunk_size
    ), moved AS (
        DELETE FROM transactions
        WHERE id = ANY(ARRAY(
            SELECT t.id FROM transactions t
            WHERE t.id = ANY(ARRAY(SELECT id FROM batch))
              AND t.status = ANY(:terminal)
              AND t.updated_at < :cutoff
              AND (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = t.id LIMIT 1) IS NULL
              AND NOT EXISTS (
                  SELECT 1 FROM transactions r WHERE r.reverses_id = t.id AND r.status = 'pending')
            FOR UPDATE SKIP LOCKED
        ))
        RETURNING {_TRANSACTION_COLUMNS}
    ), kept AS (
        INSERT INTO transactions_archive ({_TRANSACTION_COLUMNS})
        SELECT {_TRANSACTION_COLUMNS} FROM moved
        RETURNING 1
    ), last AS (
        SELECT created_at, id FROM batch ORDER BY created_at DESC, id DESC LIMIT 1
    )
    SELECT (SELECT created_at FROM last) AS last_created_at, (SELECT id FROM last) AS last_id,
           (SELECT count(*) FROM kept) AS moved
    """
)


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What one :func:`archive_before` call did.

    Attributes:
        cutoff: the cutoff applied: the one asked for, or the start of today
            (UTC) if that is earlier (an open day has no snapshot yet).
        snapshots_created: snapshots taken first so that the moved days stay summarised.
        entries_archived: ledger entries moved to ``ledger_entries_archive``.
        transactions_archived: transactions moved to ``transactions_archive``.
        chunks: database transactions that moved rows.
    """

    cutoff: dt.datetime
    snapshots_created: int
    entries_archived: int
    transactions_archived: int
    chunks: int


def archive_before(*, cutoff: dt.datetime, chunk_size: int) -> ArchiveSummary:
    """Move entries created before ``cutoff``, then terminal transactions older than it.

    Opens its own database transactions: one to take the snapshots of every
    closed day up to the cutoff (``take_snapshots``), then one per chunk.
    Safe to run twice (the second run moves nothing) and concurrently (rows
    are picked ``FOR UPDATE SKIP LOCKED``). Entries of the current UTC day
    are never moved: no snapshot can summarise them yet.

    Args:
        cutoff: an aware datetime; rows older than it move.
        chunk_size: rows per chunk (per database transaction), at least 1.

    Raises:
        ValueError: ``cutoff`` is naive or ``chunk_size`` is below 1.
        sqlalchemy.exc.DBAPIError: a database error; the chunks committed
            before it stay moved, the failed chunk moved nothing.
    """
    if cutoff.tzinfo is None:
        raise ValueError("cutoff must be timezone-aware")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    with db.transaction() as session:
        today_start = dt.datetime.combine(utc_today(session), dt.time(), tzinfo=dt.UTC)
        cutoff = min(cutoff.astimezone(dt.UTC), today_start)
        last_day = (cutoff - dt.timedelta(microseconds=1)).date()
        snapshots = take_snapshots(session, through_day=last_day)
        # Entry ids grow with time, so the old ones sit below this bound (found via BRIN).
        bound_id = session.execute(
            text("SELECT max(id) FROM ledger_entries WHERE created_at < :cutoff"),
            {"cutoff": cutoff},
        ).scalar_one()
    entries = transactions = chunks = 0
    after_id = 0
    while bound_id is not None:
        with db.transaction() as session:
            _start_chunk(session, archiving=True)
            row = session.execute(
                _MOVE_ENTRIES,
                {
                    "after_id": after_id,
                    "bound_id": bound_id,
                    "cutoff": cutoff,
                    "chunk_size": chunk_size,
                },
            ).one()
        if row.last_id is None:
            break
        after_id, entries, chunks = row.last_id, entries + row.moved, chunks + 1

    after_created_at = dt.datetime.min.replace(tzinfo=dt.UTC)
    after_transaction_id = uuid.UUID(int=0)
    while True:
        with db.transaction() as session:
            _start_chunk(session, archiving=False)
            row = session.execute(
                _MOVE_TRANSACTIONS,
                {
                    "after_created_at": after_created_at,
                    "after_id": after_transaction_id,
                    "cutoff": cutoff,
                    "terminal": _TERMINAL,
                    "chunk_size": chunk_size,
                },
            ).one()
        if row.last_id is None:
            break
        after_created_at, after_transaction_id = row.last_created_at, row.last_id
        transactions, chunks = transactions + row.moved, chunks + (row.moved > 0)

    summary = ArchiveSummary(
        cutoff=cutoff,
        snapshots_created=snapshots.snapshots_created,
        entries_archived=entries,
        transactions_archived=transactions,
        chunks=chunks,
    )
    _log.info("archive", **{k: str(v) for k, v in dataclasses.asdict(summary).items()})
    return summary


def _start_chunk(session: Session, *, archiving: bool) -> None:
    """Prepare one chunk's transaction: maintenance timeouts and, for entries, the archive mode.

    ``tally.archiving = on`` (transaction-local) is what lets the append-only
    trigger on ``ledger_entries`` accept this transaction's DELETEs (migration 0001).
    """
    set_maintenance_timeouts(session)
    if archiving:
        session.execute(text("SELECT set_config('tally.archiving', 'on', true)"))
