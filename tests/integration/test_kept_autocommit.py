"""``shared.db.KeptAutocommit``: one autocommit session kept between uses, never a stale one.

The intake's group leader keeps its session between groups. Each use must
still see what :func:`shared.db.autocommit` gives: statements that commit
as they complete, callbacks after the block, and a live connection, even
after the server closed the kept one or a block failed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.models import Wallet


def _backend_pid(session: Any) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_uses_share_one_connection_and_each_statement_commits_as_it_completes() -> None:
    kept = db.KeptAutocommit()
    name = f"kept_{uuid.uuid4().hex}"
    with kept.session() as session:
        first_pid = _backend_pid(session)
        session.execute(text(f"CREATE TABLE {name} (n int)"))
        session.execute(text(f"INSERT INTO {name} VALUES (1)"))
        with db.transaction() as other:  # another connection sees it before the block ends
            assert other.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() == 1
    with kept.session() as session:
        assert _backend_pid(session) == first_pid
        session.execute(text(f"DROP TABLE {name}"))


def test_a_connection_the_server_closed_between_uses_is_replaced() -> None:
    kept = db.KeptAutocommit()
    with kept.session() as session:
        ended_pid = _backend_pid(session)
    with db.transaction() as other:
        # Waits (up to a minute) for the session to exit, and so for its socket to close.
        ended = other.execute(
            text("SELECT pg_terminate_backend(:pid, 60000)"), {"pid": ended_pid}
        ).scalar_one()
    assert ended
    with kept.session() as session:
        assert _backend_pid(session) != ended_pid


def test_each_use_sends_its_own_messages_after_its_statements(redis_client: Any) -> None:
    import broker
    from tests.integration.test_batch_submission import drains_queued, signal_cleared

    kept = db.KeptAutocommit()
    for _ in range(3):
        before = signal_cleared(redis_client)  # so the next signal is not merged
        with kept.session() as session:
            broker.send_after_commit(session, broker.DRAIN)
        assert drains_queued(redis_client) == before + 1


def test_a_block_that_raised_discards_its_connection_and_still_runs_its_callbacks() -> None:
    kept = db.KeptAutocommit()
    ran: list[str] = []
    with pytest.raises(RuntimeError), kept.session() as session:
        failed_pid = _backend_pid(session)
        db.after_commit(session, lambda: ran.append("callback"))
        raise RuntimeError("the block failed after its statement committed")
    assert ran == ["callback"]
    with kept.session() as session:
        assert _backend_pid(session) != failed_pid
        assert "after_commit" not in session.info


def test_rows_loaded_in_one_use_are_not_served_to_the_next(
    wallet_factory: Any,
) -> None:
    kept = db.KeptAutocommit()
    wallet_id = wallet_factory()
    with kept.session() as session:
        wallet = session.get(Wallet, wallet_id)
        assert wallet is not None
    with db.transaction() as other:
        other.execute(
            text("UPDATE wallets SET owner_ref = 'changed' WHERE id = :id"), {"id": wallet_id}
        )
    with kept.session() as session:
        assert wallet not in session
        reloaded = session.get(Wallet, wallet_id)
        assert reloaded is not None and reloaded.owner_ref == "changed"


def test_a_new_engine_gets_a_new_connection() -> None:
    kept = db.KeptAutocommit()
    with kept.session() as session:
        old_pid = _backend_pid(session)
    db.reset_engine()
    with kept.session() as session:
        assert _backend_pid(session) != old_pid
