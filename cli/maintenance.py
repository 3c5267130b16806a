"""``tally snapshot``, ``tally archive``, ``tally reconcile``: the beat jobs, run now.

They call the same service code as the Celery tasks, synchronously, so an
operator can catch up or check the ledger without a worker.
"""

from __future__ import annotations

import datetime as dt

import click

from shared import db
from shared.config import get_settings
from shared.ledger.money import format_amount
from shared.services import archive, reconciliation, snapshots
from shared.services.audit import Actor


@click.command("snapshot")
def snapshot() -> None:
    """Take the balance snapshots of every closed UTC day not yet snapshotted."""
    with db.transaction() as session:
        summary = snapshots.take_snapshots(session)
    click.echo(
        f"snapshots through {summary.through_day}: {summary.snapshots_created} created, "
        f"{summary.wallets_scanned} wallets scanned"
    )


@click.command("archive")
@click.option(
    "--before",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Archive what is older than this UTC date or time "
    "(default: TALLY_ARCHIVE_AFTER_DAYS days ago).",
)
def archive_command(before: dt.datetime | None) -> None:
    """Move old ledger entries and terminal transactions to the archive tables."""
    settings = get_settings()
    if before is None:
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=settings.archive_after_days)
    else:
        cutoff = before.replace(tzinfo=dt.UTC)
    summary = archive.archive_before(cutoff=cutoff, chunk_size=settings.archive_chunk_size)
    click.echo(
        f"archived before {summary.cutoff.isoformat()}: {summary.entries_archived} entries, "
        f"{summary.transactions_archived} transactions in {summary.chunks} chunks "
        f"({summary.snapshots_created} snapshots taken first)"
    )


@click.command("reconcile")
def reconcile() -> None:
    """Compare every stored balance with the ledger now; exit 1 unless the run is ok."""
    with db.transaction() as session:
        run_id = reconciliation.start_reconciliation(session, actor=Actor.cli())
    run = reconciliation.run_reconciliation(run_id)
    click.echo(f"reconciliation {run.id}: {run.status}, {run.wallets_checked} wallets checked")
    for code, total_minor in sorted(run.currency_totals.items()):
        click.echo(f"  total {code} {format_amount(total_minor, code)}")
    for m in run.mismatches:
        stored = format_amount(m["stored_balance_minor"], m["currency"])
        ledger = format_amount(m["ledger_balance_minor"], m["currency"])
        click.echo(f"  mismatch {m['wallet_id']} {m['currency']}: stored {stored}, ledger {ledger}")
    if run.status != "ok":
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add the ``snapshot``, ``archive`` and ``reconcile`` commands to ``group``."""
    for command in (snapshot, archive_command, reconcile):
        group.add_command(command)
