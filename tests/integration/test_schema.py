"""The schema: migrations match the models; the database itself enforces the ledger's rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared import db
from shared.models import Base


def test_migrations_match_the_models() -> None:
    with db.get_engine().connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_dropping_the_shards_downgrades_and_upgrades_again() -> None:
    from alembic import command

    from shared.config import get_settings
    from shared.migrations import alembic_config, upgrade_to_head

    url = get_settings().database_url
    db.reset_engine()  # no pooled connection of this process in the migration's way
    command.downgrade(alembic_config(url), "0015")
    try:
        with db.transaction() as session:
            revisions = set(
                session.execute(text("SELECT version_num FROM alembic_version")).scalars()
            )
            assert revisions == {"0015"}, revisions
            columns = session.execute(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE column_name = 'shard'"
                    " ORDER BY table_name"
                )
            ).scalars()
            assert list(columns) == ["group_lanes", "transactions", "transactions_archive"]
    finally:
        db.reset_engine()
        upgrade_to_head(url)
    test_migrations_match_the_models()


@pytest.mark.parametrize("table", ["transactions", "ledger_entries", "events"])
def test_every_column_of_a_busy_table_is_analyzed_from_a_small_sample(table: str) -> None:
    # One column at the server's default target (100) would make ANALYZE read
    # 30,000 rows for the whole table again (migration 0020): a column added
    # to these tables needs ``SET STATISTICS 10`` in its migration too.
    with db.transaction() as session:
        targets = dict(
            session.execute(
                text(
                    "SELECT attname, attstattarget FROM pg_attribute"
                    " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0"
                    " AND NOT attisdropped"
                ),
                {"table": table},
            ).all()
        )
    assert targets, table
    assert {name: target for name, target in targets.items() if target != 10} == {}


def _one_entry() -> int:
    with db.transaction() as session:
        entry_id = session.execute(text("SELECT id FROM ledger_entries LIMIT 1")).scalar()
    if entry_id is None:
        pytest.skip("no ledger entry yet")
    return int(entry_id)


def _seed_entry(wallet_factory: Any) -> None:
    from tests.integration.test_apply_path import drain, record

    a = wallet_factory()
    record("deposit", 100, destination=a)
    drain()


@pytest.mark.parametrize(
    "statement",
    ["UPDATE ledger_entries SET amount_minor = amount_minor + 1 WHERE id = :id",
     "DELETE FROM ledger_entries WHERE id = :id"],
)  # fmt: skip
def test_ledger_entries_reject_update_and_delete(statement: str, wallet_factory: Any) -> None:
    _seed_entry(wallet_factory)
    entry_id = _one_entry()
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text(statement), {"id": entry_id})


def test_ledger_entries_reject_truncate() -> None:
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text("TRUNCATE ledger_entries CASCADE"))


def test_update_is_rejected_even_in_archive_mode(wallet_factory: Any) -> None:
    _seed_entry(wallet_factory)
    entry_id = _one_entry()
    with pytest.raises(DBAPIError, match="append-only"), db.transaction() as session:
        session.execute(text("SELECT set_config('tally.archiving', 'on', true)"))
        session.execute(
            text("UPDATE ledger_entries SET sequence = sequence WHERE id = :id"), {"id": entry_id}
        )


def test_non_system_wallet_cannot_go_negative(wallet_factory: Any) -> None:
    wallet_id = wallet_factory()
    for column in ("balance_minor = -1", "held_minor = 1"):
        with pytest.raises(IntegrityError), db.transaction() as session:
            session.execute(text(f"UPDATE wallets SET {column} WHERE id = :id"), {"id": wallet_id})


def test_one_system_wallet_per_currency() -> None:
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.execute(
            text("INSERT INTO wallets (id, currency, is_system) VALUES (:id, 'SGD', true)"),
            {"id": uuid.uuid4()},
        )


def test_sequence_is_unique_per_wallet(wallet_factory: Any) -> None:
    _seed_entry(wallet_factory)
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO ledger_entries (wallet_id, transaction_id, transaction_type, direction, "
                "amount_minor, balance_after_minor, sequence) SELECT wallet_id, transaction_id, "
                "transaction_type, direction, amount_minor, balance_after_minor, sequence "
                "FROM ledger_entries LIMIT 1"
            )
        )
