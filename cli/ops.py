"""The operator's commands: ``tally keys``, ``tally retry``, ``tally transactions show``,
``tally wallets show``.

Every command that changes something appends an audit event whose actor is
``cli`` and the OS user (``shared.services.audit.Actor.cli``), in the same
database transaction as the change. A retry sends a drain after its commit,
as the ops API's does (``broker.send_after_commit``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import click

from shared import db
from shared.ledger.errors import FailureCode, TallyError
from shared.ledger.money import format_amount
from shared.services import bulk_retry, inspection, transactions, wallets
from shared.services.api_keys import Role, create_api_key, list_api_keys, revoke_api_key
from shared.services.audit import Actor

#: How many of a wallet's newest entries ``tally wallets show`` prints by default.
ENTRIES_SHOWN_DEFAULT = 10


def _time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@click.group("keys")
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(role: str, name: str) -> None:
    """Create an API key and print its secret (shown once; only a hash is stored)."""
    with db.transaction() as session:
        key, secret = create_api_key(
            session, role=Role(role), name=name or f"{role} key", actor=Actor.cli()
        )
    click.echo(f"id:     {key.id}\nrole:   {key.role}\nsecret: {secret}")


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def keys_list(include_revoked: bool) -> None:
    """List API keys: id, role, name, created and revoked times (never a secret)."""
    with db.transaction() as session:
        rows = list_api_keys(session, include_revoked=include_revoked)
    for key in rows:
        revoked = f"  revoked {_time(key.revoked_at)}" if key.revoked_at else ""
        click.echo(f"{key.id}  {key.role:<7}  {key.name}  created {_time(key.created_at)}{revoked}")


@keys.command("revoke")
@click.argument("key_id", type=click.UUID)
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke an API key; every API process refuses it within a second (its key cache)."""
    with db.transaction() as session:
        revoked = revoke_api_key(session, key_id, actor=Actor.cli())
    if not revoked:
        raise click.ClickException(f"no live key with id {key_id}")
    click.echo(f"revoked {key_id}")


@click.command("retry")
@click.argument("transaction_ids", nargs=-1, type=click.UUID)
@click.option("--failed", "bulk", is_flag=True, help="Retry every failed transaction selected.")
@click.option("--code", type=click.Choice([c.value for c in FailureCode]), default=None)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Only those that failed at or after this UTC date or time.",
)
@click.option("--wallet", "wallet_id", type=click.UUID, default=None, help="Only this wallet's.")
@click.option("--limit", type=click.IntRange(1, bulk_retry.BULK_RETRY_LIMIT_MAX), default=1000)
@click.option("--dry-run", is_flag=True, help="Print what would be retried; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def retry(
    transaction_ids: tuple[uuid.UUID, ...],
    bulk: bool,
    code: str | None,
    since: dt.datetime | None,
    wallet_id: uuid.UUID | None,
    limit: int,
    dry_run: bool,
    yes: bool,
) -> None:
    """Move failed transactions back to pending and enqueue them (as the ops API does).

    Either name them (``tally retry ID...``) or select them with ``--failed``
    and filters; a selection prints its count and asks before retrying.
    """
    if bool(transaction_ids) == bulk:
        raise click.UsageError("name transaction ids, or select them with --failed (not both)")
    if transaction_ids:
        _retry_each(transaction_ids)
        return
    selection = bulk_retry.RetryFilter(
        failure_code=code,
        since=None if since is None else since.replace(tzinfo=dt.UTC),
        wallet_id=wallet_id,
        limit=limit,
    )
    with db.transaction() as session:
        selected = bulk_retry.select_failed(session, selection)
    click.echo(f"{len(selected)} failed transaction(s) selected")
    if dry_run or not selected:
        for transaction_id in selected:
            click.echo(f"  {transaction_id}")
        return
    if not yes:
        click.confirm(f"retry {len(selected)} transaction(s)?", abort=True)
    with db.transaction() as session:
        retried = bulk_retry.retry_selected(
            session,
            selected,
            actor=Actor.cli(),
            details=selection.as_details(),
        )
    click.echo(f"{len(retried)} transaction(s) are pending again")


def _retry_each(transaction_ids: tuple[uuid.UUID, ...]) -> None:
    """Retry each named transaction in its own database transaction; exit 1 if any failed."""
    failures = 0
    for transaction_id in transaction_ids:
        try:
            with db.transaction() as session:
                transaction = transactions.retry_transaction(
                    session,
                    transaction_id,
                    actor=Actor.cli(),
                )
        except TallyError as error:
            failures += 1
            click.echo(f"{transaction_id}: {error.code}: {error.detail}", err=True)
            continue
        click.echo(f"{transaction.id} is {transaction.status} again")
    if failures:
        raise click.ClickException(f"{failures} of {len(transaction_ids)} not retried")


@click.group("transactions")
def transactions_group() -> None:
    """Inspect transactions."""


@transactions_group.command("show")
@click.argument("transaction_id", type=click.UUID)
def transactions_show(transaction_id: uuid.UUID) -> None:
    """Print a transaction: status, attempts, failure, timestamps and ledger entries."""
    try:
        with db.transaction() as session:
            transaction = transactions.get_transaction(session, transaction_id)
            entries = inspection.transaction_entries(session, transaction_id)
            currencies = _wallet_currencies(session, {e.wallet_id for e in entries})
    except TallyError as error:
        raise click.ClickException(f"{error.code}: {error.detail}") from None
    lines = [
        f"id:          {transaction.id}",
        f"type:        {transaction.type}",
        f"status:      {transaction.status}",
    ]
    if transaction.legs is not None:
        for index, leg in enumerate(transaction.legs):
            amount = format_amount(leg["amount_minor"], leg["currency"])
            lines.append(
                f"leg {index}:       {amount} {leg['currency']} "
                f"{leg['source_wallet_id']} -> {leg['destination_wallet_id']}"
            )
    else:
        amount = format_amount(transaction.amount_minor, transaction.currency)
        lines += [
            f"amount:      {amount} {transaction.currency}",
            f"source:      {transaction.source_wallet_id or '-'}",
            f"destination: {transaction.destination_wallet_id or '-'}",
        ]
    if transaction.hold_id is not None:
        lines.append(f"hold:        {transaction.hold_id}")
    lines += [
        f"attempts:    {transaction.attempts}",
        f"failure:     {transaction.failure_code or '-'}"
        + (f" ({transaction.failure_message})" if transaction.failure_message else ""),
        f"created:     {_time(transaction.created_at)}",
        f"updated:     {_time(transaction.updated_at)}",
        f"completed:   {_time(transaction.completed_at)}",
    ]
    if transaction.expires_at is not None:
        lines.append(f"expires:     {_time(transaction.expires_at)}")
    lines.append(f"entries:     {len(entries)}")
    for entry in entries:
        currency = currencies[entry.wallet_id]
        lines.append(
            f"  {entry.wallet_id} #{entry.sequence} {entry.direction:<6} "
            f"{format_amount(entry.amount_minor, currency)} {currency} "
            f"-> {format_amount(entry.balance_after_minor, currency)}  {_time(entry.created_at)}"
        )
    click.echo("\n".join(lines))


def _wallet_currencies(session: Any, wallet_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    return {wallet_id: wallets.get_wallet(session, wallet_id).currency for wallet_id in wallet_ids}


@click.group("wallets")
def wallets_group() -> None:
    """Inspect wallets."""


@wallets_group.command("show")
@click.argument("wallet_id", type=click.UUID)
@click.option(
    "--entries", "entries_shown", type=click.IntRange(0, 200), default=ENTRIES_SHOWN_DEFAULT
)
def wallets_show(wallet_id: uuid.UUID, entries_shown: int) -> None:
    """Print a wallet: balances, open holds and its newest ledger entries."""
    try:
        with db.transaction() as session:
            wallet = wallets.get_wallet(session, wallet_id)
            holds = inspection.open_holds(session, wallet_id)
            entries, _ = (
                wallets.list_entries(session, wallet_id, limit=entries_shown, cursor=None)
                if entries_shown
                else ([], None)
            )
    except TallyError as error:
        raise click.ClickException(f"{error.code}: {error.detail}") from None
    currency = wallet.currency

    def money(minor: int) -> str:
        return f"{format_amount(minor, currency)} {currency}"

    lines = [
        f"id:        {wallet.id}",
        f"owner:     {wallet.owner_ref or '(system)'}",
        f"status:    {wallet.status}",
        f"balance:   {money(wallet.balance_minor)}",
        f"available: {money(wallet.balance_minor - wallet.held_minor)}",
        f"held:      {money(wallet.held_minor)}",
        f"overdraft: {money(wallet.overdraft_limit_minor)}",
        f"created:   {_time(wallet.created_at)}",
        f"open holds: {len(holds)}",
    ]
    lines += [
        f"  {hold.id} {money(hold.amount_minor)} expires {_time(hold.expires_at)}" for hold in holds
    ]
    lines.append(f"newest entries: {len(entries)}")
    lines += [
        f"  #{entry.sequence} {entry.transaction_type:<10} {entry.direction:<6} "
        f"{money(entry.amount_minor)} -> {format_amount(entry.balance_after_minor, currency)}  "
        f"{entry.transaction_id}  {_time(entry.created_at)}"
        for entry in entries
    ]
    click.echo("\n".join(lines))


def register(group: click.Group) -> None:
    """Add ``keys``, ``retry``, ``transactions`` and ``wallets`` to ``group``."""
    for command in (keys, retry, transactions_group, wallets_group):
        group.add_command(command)
