"""Reconciliation: check every stored balance against the ledger, and every currency's total.

For each wallet, the ledger balance is its latest balance snapshot plus the
signed sum (credit +, debit -) of its entries in ``ledger_entries_all`` (live
or archived) with a higher ``sequence`` than the snapshot's (docs/architecture.md, invariant 5).
Its held amount must equal both the signed sum of its ``hold_entries`` (hold +,
release -) and the sum of its holds still ``held``; a difference is reported
like a balance mismatch, with both held amounts. For each
currency, the stored balances and the ledger balances must each sum to zero
(invariant 1). All of it is one aggregate SQL statement, so it reads one
consistent state of the database and Python holds only one row per currency
plus the mismatches.
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.errors import NotFound
from shared.models import ReconciliationRun
from shared.pagination import newest_first_page
from shared.services import audit
from shared.services.events import record_run_event
from shared.services.snapshots import set_maintenance_timeouts

_log = structlog.get_logger(__name__)

_RECONCILE = text(
    """
    WITH per_wallet AS (
        SELECT w.id, w.currency, w.balance_minor AS stored_minor,
               coalesce(s.balance_minor, 0) + coalesce(d.delta_minor, 0) AS ledger_minor,
               w.held_minor AS stored_held_minor,
               coalesce(h.held_minor, 0) AS ledger_held_minor,
               coalesce(o.held_minor, 0) AS open_held_minor
        FROM wallets w
        LEFT JOIN LATERAL (
            SELECT balance_minor, last_sequence FROM balance_snapshots
            WHERE wallet_id = w.id ORDER BY day DESC LIMIT 1
        ) s ON true
        LEFT JOIN LATERAL (
            SELECT sum(e.signed_amount_minor) AS delta_minor
            FROM ledger_entries_all e
            WHERE e.wallet_id = w.id AND e.sequence > coalesce(s.last_sequence, 0)
        ) d ON true
        LEFT JOIN LATERAL (
            SELECT sum(CASE direction WHEN 'hold' THEN amount_minor ELSE -amount_minor END)
                AS held_minor
            FROM hold_entries WHERE wallet_id = w.id
        ) h ON true
        LEFT JOIN LATERAL (
            SELECT sum(amount_minor) AS held_minor FROM transactions
            WHERE source_wallet_id = w.id AND type = 'hold' AND status = 'held'
        ) o ON true
    )
    SELECT currency,
           count(*) AS wallets,
           sum(stored_minor)::bigint AS stored_total_minor,
           sum(ledger_minor)::bigint AS ledger_total_minor,
           coalesce(
               jsonb_agg(
                   jsonb_build_object(
                       'wallet_id', id::text, 'currency', currency,
                       'stored_balance_minor', stored_minor,
                       'ledger_balance_minor', ledger_minor,
                       'stored_held_balance_minor', stored_held_minor,
                       'ledger_held_balance_minor', ledger_held_minor,
                       'open_holds_minor', open_held_minor
                   ) ORDER BY id
               ) FILTER (
                   WHERE stored_minor <> ledger_minor
                      OR stored_held_minor <> ledger_held_minor
                      OR stored_held_minor <> open_held_minor
               ),
               '[]'::jsonb
           ) AS mismatches
    FROM per_wallet
    GROUP BY currency
    ORDER BY currency
    """
)


def reconciliation_not_found(run_id: uuid.UUID) -> NotFound:
    """Return the ``reconciliation_not_found`` error for ``run_id``."""
    return NotFound(f"reconciliation {run_id} does not exist", code="reconciliation_not_found")


def start_reconciliation(session: Session, *, actor: audit.Actor | None = None) -> uuid.UUID:
    """Record a new ``running`` reconciliation run and return its id (the caller commits).

    Args:
        actor: the operator who started it; when given, ``reconciliation.start``
            is appended to the audit log in the same transaction (beat's
            scheduled runs pass none).
    """
    run_id = uuid.uuid4()
    session.add(ReconciliationRun(id=run_id, status="running"))
    session.flush()
    if actor is not None:
        audit.record(session, actor, audit.AuditAction.RECONCILIATION_START, [run_id])
    return run_id


def run_reconciliation(run_id: uuid.UUID) -> ReconciliationRun:
    """Reconcile now and record the outcome in run ``run_id``; return the run.

    Opens its own database transaction. The run ends ``ok``, or ``mismatch``
    (some wallet's stored balance differs from its ledger balance, or some
    currency's stored or ledger total is not zero; logged at ERROR), or
    ``error`` (the check itself failed; recorded in a second transaction,
    and the exception re-raised). A run that is no longer ``running``, or is
    being run by another process right now, is returned as it is: delivering
    the same run twice, or at once, does the work once.

    Raises:
        NotFound: ``reconciliation_not_found``.
        sqlalchemy.exc.DBAPIError: the check failed (the run is then ``error``).
    """
    try:
        with db.transaction() as session:
            run = session.scalar(
                select(ReconciliationRun)
                .where(ReconciliationRun.id == run_id)
                .with_for_update(skip_locked=True)
            )
            if run is None:  # absent, or locked by a copy of this job that is running it
                return get_run(session, run_id)
            if run.status != "running":
                return run
            _reconcile_into(session, run)
            return run
    except NotFound:
        raise
    except Exception as error:
        message = "".join(traceback.format_exception_only(error)).strip()
        _log.error("reconciliation_failed", run_id=str(run_id), error=message)
        with db.transaction() as session:
            ended = session.scalar(
                update(ReconciliationRun)
                .where(ReconciliationRun.id == run_id, ReconciliationRun.status == "running")
                .values(status="error", error=message[:2000], finished_at=func.now())
                .returning(ReconciliationRun.id)
            )
            if ended is not None:  # this process ended it: one event per run
                record_run_event(session, run_id, "error")
        raise


def _reconcile_into(session: Session, run: ReconciliationRun) -> None:
    """Run the aggregate check and write its outcome into ``run`` (flushed, not committed)."""
    set_maintenance_timeouts(session)
    wallets_checked = 0
    mismatches: list[dict[str, Any]] = []
    stored_totals: dict[str, int] = {}
    ledger_totals: dict[str, int] = {}
    for row in session.execute(_RECONCILE):
        wallets_checked += row.wallets
        stored_totals[row.currency] = int(row.stored_total_minor)
        ledger_totals[row.currency] = int(row.ledger_total_minor)
        mismatches.extend(row.mismatches)
    unbalanced = sorted(
        code for code in stored_totals if stored_totals[code] != 0 or ledger_totals[code] != 0
    )
    run.status = "mismatch" if mismatches or unbalanced else "ok"
    run.wallets_checked = wallets_checked
    run.mismatches = mismatches
    run.currency_totals = stored_totals
    run.finished_at = session.execute(select(func.clock_timestamp())).scalar_one()
    session.flush()
    if run.status == "mismatch":
        record_run_event(session, run.id, "mismatch")
        _log.error(
            "reconciliation_mismatch",
            run_id=str(run.id),
            wallets_mismatched=len(mismatches),
            wallet_ids=[m["wallet_id"] for m in mismatches[:20]],
            currencies_unbalanced=unbalanced,
            stored_totals_minor={code: stored_totals[code] for code in unbalanced},
            ledger_totals_minor={code: ledger_totals[code] for code in unbalanced},
        )
    else:
        _log.info("reconciliation_ok", run_id=str(run.id), wallets_checked=wallets_checked)


def get_run(session: Session, run_id: uuid.UUID) -> ReconciliationRun:
    """Return reconciliation run ``run_id``.

    Raises:
        NotFound: ``reconciliation_not_found``.
    """
    run = session.get(ReconciliationRun, run_id, populate_existing=True)
    if run is None:
        raise reconciliation_not_found(run_id)
    return run


def list_runs(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[Sequence[ReconciliationRun], str | None]:
    """Return a page of runs, newest first, and the next page's cursor (or None).

    Args:
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = select(ReconciliationRun)
    return newest_first_page(
        session,
        query,
        created_at=ReconciliationRun.started_at,
        id_=ReconciliationRun.id,
        limit=limit,
        cursor=cursor,
    )
