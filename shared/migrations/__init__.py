"""Alembic migrations: the only way Tally's schema changes.

``migrate_database`` brings a database to what the code expects (``tally
migrate``, ``tally up``, the benchmarks, the test fixtures): the schema through
``upgrade_to_head``, then the enabled currencies' system wallets.
``alembic.ini`` at the repository root serves the ``alembic`` command for
authoring new revisions.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared import db
from shared.config import get_settings
from shared.services import wallets

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """Return an Alembic ``Config`` for ``database_url`` pointing at this package's scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Apply every migration not yet applied to ``database_url`` (idempotent).

    Upgrades every head: independent features may each add a revision on the
    same parent (Alembic docs, "Working with Branches"), until a merge revision
    joins them.
    """
    command.upgrade(alembic_config(database_url), "heads")


def migrate_database() -> None:
    """Migrate the configured database to head and enable the configured currencies.

    Reads ``DATABASE_URL`` and ``TALLY_CURRENCIES`` (``shared.config``); idempotent:
    a second run changes nothing. Each enabled currency gets its system wallet
    (docs/api.md, "Wallets").
    """
    settings = get_settings()
    upgrade_to_head(settings.database_url)
    with db.transaction() as session:
        wallets.ensure_currencies(session, settings.currencies)
