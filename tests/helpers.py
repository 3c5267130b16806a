"""Helpers shared by tests: submit over HTTP, await terminal statuses, check the ledger's invariants."""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import text

from shared import db

TERMINAL = {"completed", "failed", "voided", "expired"}


@contextlib.contextmanager
def drain_messages_lost() -> Iterator[None]:
    """Make the drain signals sent inside the block publish nothing, as if their messages were lost.

    Sets the stream's signal first, as a queued drain would: the after-commit
    signal's ``SET NX`` then fails and sends no message. The next drain
    (the sweep's) clears the signal when it takes the stream's lock.
    """
    import broker
    from shared.redis_client import get_redis

    get_redis().set(broker.STREAM_SIGNAL_KEY, b"1", ex=600)
    yield
    assert broker.drain_signaller.flush()


def submit(
    client: Any, headers: dict[str, str], body: dict[str, Any], key: str | None = None
) -> Any:
    """POST a transaction with a fresh (or the given) Idempotency-Key; return the response."""
    return client.post(
        "/v1/transactions",
        json=body,
        headers={**headers, "Idempotency-Key": key or str(uuid.uuid4())},
    )


def drain_stream(**options: Any) -> Any:
    """Apply everything pending, in acceptance order, in this process, as the worker's task does.

    Returns the :class:`shared.services.processor.DrainReport`. Waits for the
    drain's after-commit callbacks, so their effects are visible on return.
    """
    from shared.config import get_settings
    from shared.services.processor import drain

    settings = get_settings()
    options = {
        "batch_size": settings.batch_size,
        "attempts_max": settings.apply_attempts_max,
        **options,
    }
    report = drain(**options)
    db.wait_for_after_commit()
    return report


def statuses(transaction_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return ``{id: {"status", "failure_code", "attempts"}}`` read from the database."""
    ids = [uuid.UUID(str(t)) for t in transaction_ids]
    with db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT id, status, failure_code, attempts FROM transactions WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
    return {
        str(r.id): {
            "status": r.status,
            "failure_code": r.failure_code,
            "attempts": r.attempts,
        }
        for r in rows
    }


def transaction_rows(ids: list[str]) -> dict[str, dict[str, Any]]:
    """Return ``{id: {"lane_sequence", "xmin", "status"}}`` for the transactions ``ids``."""
    with db.transaction() as session:
        found = session.execute(
            text(
                "SELECT id, lane_sequence, xmin::text AS xmin, status FROM transactions "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        ).all()
    return {str(r.id): {"lane_sequence": r.lane_sequence, "xmin": r.xmin, "status": r.status}
            for r in found}  # fmt: skip


def count_keys(keys: list[str]) -> int:
    """Return how many transactions carry one of the idempotency ``keys``."""
    with db.transaction() as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM transactions WHERE idempotency_key = ANY(:keys)"),
                {"keys": keys},
            ).scalar_one()
        )


def wait_terminal(
    transaction_ids: Iterable[str],
    *,
    timeout_seconds: float = 60,
    context: str = "",
    until: frozenset[str] | set[str] = TERMINAL,
) -> dict[str, dict[str, Any]]:
    """Wait until every transaction is terminal (or in ``until``); return their statuses.

    Raises:
        AssertionError: some are still not terminal after ``timeout_seconds``
            (a bound far above the expected time, so a slow machine does not fail).
    """
    ids = [str(t) for t in transaction_ids]
    deadline = time.monotonic() + timeout_seconds
    while True:
        current = statuses(ids)
        waiting = [t for t in ids if current.get(t, {}).get("status") not in until]
        if not waiting:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(waiting)} of {len(ids)} transactions not terminal after "
                f"{timeout_seconds}s, e.g. {current.get(waiting[0])} {context}"
            )
        time.sleep(0.1)


def balance_minor(wallet_id: uuid.UUID | str) -> int:
    """Return a wallet's stored balance in minor units."""
    with db.transaction() as session:
        return int(
            session.execute(
                text("SELECT balance_minor FROM wallets WHERE id = :id"), {"id": wallet_id}
            ).scalar_one()
        )


def assert_ledger_consistent() -> None:
    """Check docs/architecture.md's invariants 1, 2 and 5 over the whole database.

    - every currency's wallets sum to zero, and every transaction's entries too;
    - no non-system wallet's balance or available balance is below minus its
      overdraft limit;
    - every wallet's balance equals the sum of its entries, ``last_sequence``
      equals its entry count, sequences run 1..n with no gap, and each
      ``balance_after`` is the running sum;
    - every wallet's held amount equals the sum of its hold entries and of its
      holds still ``held``.
    """
    with db.transaction() as session:
        # Archived entries still count: ledger_entries_all reads live and archive as one.
        totals = session.execute(
            text("SELECT currency, sum(balance_minor) FROM wallets GROUP BY currency")
        ).all()
        assert all(total == 0 for _, total in totals), f"currency totals not zero: {totals}"
        unbalanced = session.execute(
            text(
                "SELECT transaction_id, sum(signed_amount_minor) FROM ledger_entries_all "
                "GROUP BY transaction_id HAVING sum(signed_amount_minor) <> 0 LIMIT 5"
            )
        ).all()
        assert not unbalanced, f"transactions whose entries do not sum to zero: {unbalanced}"
        negative = session.execute(
            text(
                "SELECT id, balance_minor, held_minor, overdraft_limit_minor FROM wallets "
                "WHERE NOT is_system AND (balance_minor < -overdraft_limit_minor "
                "OR balance_minor - held_minor < -overdraft_limit_minor) LIMIT 5"
            )
        ).all()
        assert not negative, f"non-system wallets below their overdraft limit: {negative}"
        drift = session.execute(
            text(
                """
                WITH e AS (
                    SELECT wallet_id, count(*) AS n, max(sequence) AS max_seq,
                           sum(signed_amount_minor) AS total
                    FROM ledger_entries_all GROUP BY wallet_id)
                SELECT w.id, w.balance_minor, e.total, w.last_sequence, e.n, e.max_seq
                FROM wallets w LEFT JOIN e ON e.wallet_id = w.id
                WHERE w.balance_minor <> coalesce(e.total, 0)
                   OR w.last_sequence <> coalesce(e.n, 0)
                   OR coalesce(e.max_seq, 0) <> coalesce(e.n, 0)
                LIMIT 5
                """
            )
        ).all()
        assert not drift, f"wallets whose balance or sequence disagrees with entries: {drift}"
        held_drift = session.execute(
            text(
                """
                SELECT w.id, w.held_minor, h.total, o.total FROM wallets w
                LEFT JOIN (SELECT wallet_id, sum(CASE direction WHEN 'hold' THEN amount_minor
                           ELSE -amount_minor END) AS total FROM hold_entries GROUP BY wallet_id) h
                    ON h.wallet_id = w.id
                LEFT JOIN (SELECT source_wallet_id, sum(amount_minor) AS total FROM transactions
                           WHERE type = 'hold' AND status = 'held' GROUP BY source_wallet_id) o
                    ON o.source_wallet_id = w.id
                WHERE w.held_minor <> coalesce(h.total, 0) OR w.held_minor <> coalesce(o.total, 0)
                LIMIT 5
                """
            )
        ).all()
        assert not held_drift, f"wallets whose held amount disagrees with holds: {held_drift}"
        running = session.execute(
            text(
                """
                SELECT wallet_id, sequence FROM (
                    SELECT wallet_id, sequence, balance_after_minor,
                           sum(signed_amount_minor)
                               OVER (PARTITION BY wallet_id ORDER BY sequence) AS running
                    FROM ledger_entries_all) x
                WHERE balance_after_minor <> running LIMIT 5
                """
            )
        ).all()
        assert not running, f"entries whose balance_after is not the running sum: {running}"


def deposit_body(wallet_id: Any, amount: str = "100.00", currency: str = "SGD") -> dict[str, Any]:
    """Return a deposit request body into ``wallet_id``."""
    return {
        "type": "deposit",
        "amount": amount,
        "currency": currency,
        "destination_wallet_id": str(wallet_id),
    }


def transfer_body(source: Any, destination: Any, amount: str) -> dict[str, Any]:
    """Return an SGD transfer request body."""
    return {
        "type": "transfer",
        "amount": amount,
        "currency": "SGD",
        "source_wallet_id": str(source),
        "destination_wallet_id": str(destination),
    }


def database_sessions() -> str:
    """Return every other session of the test database, one line each, for a failure's message.

    Each line: pid, state, what it waits on, its transaction's age, the
    advisory locks it holds (the drain holds the stream's), and its last statement.
    """
    with db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT a.pid, a.state, a.wait_event_type, a.wait_event,
                       round(extract(epoch FROM now() - a.xact_start)::numeric, 1) AS xact_age,
                       (SELECT count(*) FROM pg_locks l
                        WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted) AS advisory,
                       left(a.query, 120) AS query
                FROM pg_stat_activity a
                WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                ORDER BY a.xact_start NULLS LAST
                """
            )
        ).all()
    return "database sessions:\n" + "\n".join(
        f"  {r.pid} {r.state} wait={r.wait_event_type}/{r.wait_event} xact={r.xact_age}s "
        f"advisory={r.advisory} {r.query!r}"
        for r in rows
    )


def wait_for(
    check: Callable[[], Any],
    *,
    timeout_seconds: float,
    what: str,
    log: str | Callable[[], str] = "",
) -> Any:
    """Return ``check()``'s first truthy value; fail naming ``what`` after ``timeout_seconds``.

    ``log`` (or what it returns, read at the timeout) ends the failure's message.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            tail = (log() if callable(log) else log)[-3000:]
            raise AssertionError(f"{what} not within {timeout_seconds}s\n{tail}")
        time.sleep(0.1)


@contextlib.contextmanager
def stuck_lock_holder(key: str) -> Iterator[list[BaseException]]:
    """Take advisory lock ``key`` in another thread whose session then sits idle, like a stuck drain's.

    Yields a list that, once the block has ended, holds what the holder's
    next statement raised (empty if it ran): a holder whose session was ended
    writes nothing more.
    """
    held, release = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def hold() -> None:
        try:
            with db.advisory_lock(key) as connection:
                held.set()
                # Held until the block ends, however slow the test is.
                release.wait(600)
                connection.execute(text("SELECT 1"))
        except Exception as error:
            raised.append(error)
        finally:
            held.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(30) and not raised, raised
    try:
        yield raised
    finally:
        release.set()
        thread.join(30)


class ClientThreads:
    """Client threads whose failures fail the test.

    pytest reports an exception that ends a thread only as a warning
    (``PytestUnhandledThreadExceptionWarning``), after the test; here each is
    kept, with its traceback, and :meth:`join` raises them.
    """

    def __init__(self) -> None:
        self.failures: list[str] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, target: Callable[..., Any], *args: Any) -> None:
        """Run ``target(*args)`` in a new thread, keeping what it raises."""

        def run() -> None:
            try:
                target(*args)
            except BaseException:
                with self._lock:
                    self.failures.append(traceback.format_exc())

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self, *, timeout_seconds: float = 120) -> None:
        """Wait for every thread, for ``timeout_seconds`` in all.

        Raises:
            AssertionError: a thread raised (every traceback is in the message),
                or is still running at the deadline.
        """
        deadline = time.monotonic() + timeout_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = sum(thread.is_alive() for thread in self._threads)
        assert not self.failures, (
            f"{len(self.failures)} of {len(self._threads)} client threads failed:\n"
            + "\n".join(self.failures[:5])
        )
        assert not running, f"{running} client threads still running after {timeout_seconds}s"
