"""The ``tally`` command: ``up``, ``migrate``, ``serve``; ops verbs in ``cli.ops``."""

from __future__ import annotations

import importlib
import importlib.util

import click

import broker
from cli.maintenance import register as register_maintenance
from cli.openapi import openapi
from cli.ops import register as register_ops
from cli.serve import serve
from cli.up import up
from shared.migrations import migrate_database

#: Commands whose code the production image does not carry (the Dockerfile copies
#: no bench/): ``name -> "module:attribute"``, imported only when invoked and only
#: where installed (Click docs, "Lazily Loading Subcommands").
OPTIONAL_COMMANDS = {"bench": "bench.command:bench"}


def _installed(target: str) -> bool:
    return importlib.util.find_spec(target.split(".")[0]) is not None


class TallyGroup(click.Group):
    """The ``tally`` group: its own commands plus the :data:`OPTIONAL_COMMANDS` installed here."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return every command's name, the installed optional ones included, sorted."""
        optional = [name for name, target in OPTIONAL_COMMANDS.items() if _installed(target)]
        return sorted({*super().list_commands(ctx), *optional})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command ``cmd_name``, importing an optional one now; None if there is none."""
        command = super().get_command(ctx, cmd_name)
        target = OPTIONAL_COMMANDS.get(cmd_name)
        if command is not None or target is None or not _installed(target):
            return command
        module, attribute = target.split(":")
        loaded: click.Command = getattr(importlib.import_module(module), attribute)
        return loaded


@click.group(cls=TallyGroup)
def main() -> None:
    """Tally: an asynchronous wallet transaction processor."""


@main.result_callback()
def _messages_sent(*_: object, **__: object) -> None:
    """Return from a command only once the drain signals its commits gave are sent.

    ``broker.send_after_commit`` signals the stream from a background thread;
    a command that ends before it flushes would leave its work to the sweep.
    """
    broker.drain_signaller.flush()


@main.command("migrate")
def migrate() -> None:
    """Apply database migrations and make sure every enabled currency has its system wallet."""
    migrate_database()
    click.echo("database is at the latest revision")


main.add_command(openapi)
register_maintenance(main)
register_ops(main)
main.add_command(serve)
main.add_command(up)
