"""The ``tally`` command: ``up``, ``migrate``, ``keys create``, ``retry``, ``serve``."""

from __future__ import annotations

import uuid

import click

from cli.bench import bench
from cli.maintenance import register as register_maintenance
from cli.serve import serve
from cli.up import up
from shared import db
from shared.config import get_settings
from shared.ledger.errors import TallyError
from shared.migrations import upgrade_to_head
from shared.services import wallets
from shared.services.api_keys import Role, create_api_key, revoke_api_key


@click.group()
def main() -> None:
    """Tally: an asynchronous wallet transaction processor."""


def migrate_database() -> None:
    """Apply the migrations, enable the configured currencies with their system wallets,
    and move pending transactions to the shards of ``TALLY_SHARD_COUNT``."""
    from shared.services.processor import reshard_pending

    settings = get_settings()
    upgrade_to_head(settings.database_url)
    with db.transaction() as session:
        wallets.ensure_currencies(session, settings.currencies)
        reshard_pending(session, shard_count=settings.shard_count)


@main.command("migrate")
def migrate() -> None:
    """Apply database migrations and make sure every enabled currency has its system wallet."""
    migrate_database()
    click.echo("database is at the latest revision")


@main.group("keys")
def keys() -> None:
    """Manage API keys."""


@keys.command("revoke")
@click.argument("key_id", type=click.UUID)
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke an API key; running API processes stop accepting it within 30 s (their cache)."""
    with db.transaction() as session:
        revoked = revoke_api_key(session, key_id)
    if not revoked:
        raise click.ClickException(f"no live key with id {key_id}")
    click.echo(f"revoked {key_id}")


@keys.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="", help="A label to recognise the key by.")
def keys_create(role: str, name: str) -> None:
    """Create an API key and print its secret (shown once; only a hash is stored)."""
    with db.transaction() as session:
        key, secret = create_api_key(session, role=Role(role), name=name or f"{role} key")
    click.echo(f"id:     {key.id}\nrole:   {key.role}\nsecret: {secret}")


@main.command("retry")
@click.argument("transaction_id", type=click.UUID)
def retry(transaction_id: uuid.UUID) -> None:
    """Move a failed transaction back to pending and enqueue it (as the ops API does)."""
    import broker
    from shared.services.transactions import retry_transaction

    try:
        with db.transaction() as session:
            transaction = retry_transaction(
                session,
                transaction_id,
                shard_count=get_settings().shard_count,
                publish=lambda shard: broker.signal_drains([shard]),
            )
    except TallyError as error:
        raise click.ClickException(f"{error.code}: {error.detail}") from None
    click.echo(f"{transaction.id} is {transaction.status} again")


main.add_command(bench)
register_maintenance(main)
main.add_command(serve)
main.add_command(up)
