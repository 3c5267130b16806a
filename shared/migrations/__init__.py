"""Alembic migrations: the only way Tally's schema changes.

``upgrade_to_head`` runs them programmatically (``tally migrate``, ``tally up``,
the test fixtures); ``alembic.ini`` at the repository root serves the
``alembic`` command for authoring new revisions.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

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
