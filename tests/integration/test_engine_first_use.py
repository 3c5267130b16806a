"""The first database work of a process, from several threads at once, finds a whole engine.

An API process builds its engine on first use (``shared.db.get_engine``), and
its first requests arrive on many pool threads at once. A thread must never
see the engine built but not yet its session factory: that was an
``AssertionError``, answered 500, on the first requests after a start
(found by ``tests/pipeline/test_bank_redis.py``).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from shared import db

#: How long the building thread gives the other one to finish, in seconds: ample for
#: a thread that does not wait for the build (it fails at once); one that waits
#: for the build, as it must, is still waiting when this runs out.
OTHER_THREAD_SECONDS = 0.5


@pytest.mark.parametrize("opens", [db.transaction, db.autocommit])
def test_a_session_asked_for_while_the_engine_is_built_waits_for_the_whole_engine(
    opens: Any,
) -> None:
    failures: list[BaseException] = []
    building = db.sessionmaker

    def use_the_database() -> None:
        try:
            with opens() as session:
                session.execute(text("SELECT 1"))
        except BaseException as error:  # collected: the test names it
            failures.append(error)

    other = threading.Thread(target=use_the_database)

    def sessionmaker_while_another_thread_asks(*args: Any, **kwargs: Any) -> Any:
        # The engine exists by now; this thread has not made its session factory yet.
        other.start()
        other.join(OTHER_THREAD_SECONDS)
        return building(*args, **kwargs)

    db.reset_engine()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "sessionmaker", sessionmaker_while_another_thread_asks)
        use_the_database()
    other.join()
    db.reset_engine()
    assert failures == [], failures
