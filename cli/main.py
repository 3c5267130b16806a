"""The ``tally`` command: ``up``, ``migrate``, ``serve``; ops verbs in ``cli.ops``."""

from __future__ import annotations

import click

from cli.bench import bench
from cli.maintenance import register as register_maintenance
from cli.openapi import openapi
from cli.ops import register as register_ops
from cli.serve import serve
from cli.up import up
from shared import db
from shared.config import get_settings
from shared.migrations import upgrade_to_head
from shared.services import wallets


@click.group()
def main() -> None:
    """Tally: an asynchronous wallet transaction processor."""


def migrate_database() -> None:
    """Apply the migrations and enable the configured currencies with their system wallets."""
    settings = get_settings()
    upgrade_to_head(settings.database_url)
    with db.transaction() as session:
        wallets.ensure_currencies(session, settings.currencies)


@main.command("migrate")
def migrate() -> None:
    """Apply database migrations and make sure every enabled currency has its system wallet."""
    migrate_database()
    click.echo("database is at the latest revision")


main.add_command(bench)
main.add_command(openapi)
register_maintenance(main)
register_ops(main)
main.add_command(serve)
main.add_command(up)
