"""The one place that owns database engines, sessions and transactions.

Other modules receive a ``Session``; only :func:`transaction` begins, commits
and rolls back, and only :func:`autocommit` (and :class:`KeptAutocommit`, the
same session kept between uses) hands out a session whose statements
commit by themselves (the intake's one-statement write). Every
connection sets ``lock_timeout`` below ``statement_timeout`` for its whole
session (docs/architecture.md, "Known pitfalls").

Dead pooled connections (after a PostgreSQL restart) are replaced at checkout
without a round trip: a connection the server has closed has a readable
socket (end of file) while an idle healthy one has nothing to read, so the
checkout looks at the socket and raises ``DisconnectionError``, which makes
the pool discard it and check out another (SQLAlchemy docs, "Disconnect
Handling - Pessimistic", custom checkout events). ``pool_pre_ping`` would cost
a round trip on every checkout: a fifth of the API's time per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import select as select_module
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    any_,
    bindparam,
    create_engine,
    event,
    exc,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, get_settings

# SQLSTATEs worth re-running the whole database transaction for:
# 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available,
# 57014 query_canceled (statement_timeout under load),
# 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
# and class 08 (connection exceptions). PostgreSQL docs, Appendix A.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"})


@dataclasses.dataclass(frozen=True)
class _ProcessEngine:
    """A process's engine with its session factory, published together as one object.

    Threads read the current one without the lock; one built while they read
    is seen whole or not at all, never the engine without its sessions.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    pid: int


_lock = threading.Lock()
_current: _ProcessEngine | None = None


def create_db_engine(settings: Settings, **overrides: object) -> Engine:
    """Build an engine for ``settings.database_url`` with Tally's session settings.

    Args:
        settings: the configuration (URL, pool size and its wait in seconds, statement and
            lock timeouts in milliseconds).
        overrides: extra keyword arguments for ``sqlalchemy.create_engine``.
    """
    options = (
        f"-c lock_timeout={settings.lock_timeout_ms} "
        f"-c statement_timeout={settings.statement_timeout_ms} "
        "-c idle_in_transaction_session_timeout=60000"
    )
    kwargs: dict[str, object] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "pool_recycle": 1800,
        "connect_args": {"options": options, "connect_timeout": 5, "application_name": "tally"},
    }
    kwargs.update(overrides)
    engine = create_engine(settings.database_url, **kwargs)
    event.listen(engine, "checkout", _discard_if_closed_by_server)
    event.listen(engine, "connect", _send_lists_in_binary)
    return engine


def _send_lists_in_binary(dbapi_connection: Any, *_: object) -> None:
    """Make psycopg send Python lists (the apply's ``unnest`` arrays) in binary.

    psycopg's ``%s`` takes the dumper registered last for a type, which for
    ``list`` is the text one: it formats each element as text, in Python.
    The binary dumper costs a seventh for uuids and a twentieth for
    timestamps (1,000 of each: 1,748 against 234 µs, 4,103 against 217 µs,
    docs/benchmarks.md, series 8), and the statements cast each array to
    its type either way (psycopg docs, "Adapting basic Python types": lists).
    """
    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


def any_of(column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """Return ``column = ANY(:values)``: the values travel as one array parameter.

    ``column.in_(values)`` renders one bind parameter per value, which
    SQLAlchemy expands and psycopg adapts one by one: for 1,000 ids a select
    took 8.0 ms against 1.7 ms this way (docs/benchmarks.md, series 8).

    Args:
        column: a column (or ORM attribute) of a type that has a PostgreSQL array.
        values: the values to match; any iterable, read once.
    """
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))


def _discard_if_closed_by_server(dbapi_connection: Any, *_: object) -> None:
    """Raise ``DisconnectionError`` for a pooled connection the server has closed."""
    if _closed_by_server(dbapi_connection):
        raise exc.DisconnectionError("connection closed, or closed by the server")


def _closed_by_server(dbapi_connection: Any) -> bool:
    """Tell whether an idle psycopg connection is closed, or closed by the server.

    Idle and healthy, a connection's socket has nothing to read; readable means
    the server closed it (a restart, ``pg_terminate_backend``) or sent an error.
    """
    if dbapi_connection.closed:
        return True
    return bool(select_module.select([dbapi_connection.pgconn.socket], [], [], 0)[0])


def get_engine() -> Engine:
    """Return this process's engine, building it on first use.

    A process forked after the engine was built (Celery's prefork pool, gunicorn
    workers) gets a fresh one: pooled connections must never cross a fork
    (SQLAlchemy docs, "Using Connection Pools with Multiprocessing").
    """
    return _process_engine().engine


def _process_engine() -> _ProcessEngine:
    """Return this process's engine and session factory, building both on first use."""
    global _current
    pid = os.getpid()
    current = _current
    if current is None or current.pid != pid:
        with _lock:
            current = _current
            if current is None or current.pid != pid:
                if current is not None:
                    current.engine.dispose(close=False)
                engine = create_db_engine(get_settings())
                current = _ProcessEngine(engine, sessionmaker(engine, expire_on_commit=False), pid)
                _current = current  # published whole: see _ProcessEngine
    return current


def reset_engine() -> None:
    """Dispose of this process's engine; the next :func:`get_engine` builds a new one."""
    global _current
    with _lock:
        if _current is not None:
            _current.engine.dispose()
        _current = None


_log = logging.getLogger(__name__)

#: ``Connection.info`` key set while the connection holds an :func:`advisory_lock`.
_LOCK_HELD = "tally_lock_held"


@contextlib.contextmanager
def transaction(connection: Connection | None = None) -> Iterator[Session]:
    """Open a session, begin a database transaction, yield the session, commit.

    Args:
        connection: run on this connection (one held by :func:`advisory_lock`)
            instead of one from the pool.

    On any exception the transaction is rolled back and the exception re-raised.
    After a successful commit, the callbacks registered with :func:`after_commit`
    run in order (on a connection from :func:`advisory_lock`, on the process's
    after-commit thread, so the lock holder goes on at once); one that raises
    is logged and does not stop the others (a broker that is down must not
    turn a committed request into an error: docs/architecture.md, "The flow").
    With :func:`autocommit`, the only place in Tally that commits.
    """
    sessions = _process_engine().sessions
    with sessions(**({"bind": connection} if connection is not None else {})) as session:
        with session.begin():
            yield session
        callbacks: list[Callable[[], None]] = session.info.pop("after_commit", [])
    if connection is not None and connection.info.get(_LOCK_HELD) and callbacks:
        # A lock holder never waits on the broker: its callbacks run on a thread of their own.
        _after_commit_thread.submit(callbacks)
    else:
        _run_callbacks(callbacks)


@contextlib.contextmanager
def autocommit() -> Iterator[Session]:
    """Open a session whose every statement commits as it completes; yield it.

    For a write that is one statement (``shared.services.intake.record``):
    PostgreSQL runs a statement outside an explicit transaction as a
    database transaction of its own, all of it or none (PostgreSQL docs,
    "Transactions"), and psycopg in autocommit mode sends no ``BEGIN`` and
    ``COMMIT`` around it, two of its three round trips (docs/benchmarks.md,
    series 15). Each further statement is a database transaction of its own,
    so a caller that writes in two statements must use :func:`transaction`.

    The callbacks registered with :func:`after_commit` run when the block
    ends, whether it raised or not: every statement that registered one has
    committed by then (one that failed committed nothing, and registered
    nothing). One that raises is logged and does not stop the others.
    """
    connection, session = _open_autocommit(_process_engine())
    with connection, session:
        try:
            yield session
        finally:
            _run_callbacks(session.info.pop("after_commit", []))


#: Where an autocommit session comes from: :func:`autocommit`, or a
#: :class:`KeptAutocommit`'s ``session``.
AutocommitSessions = Callable[[], contextlib.AbstractContextManager[Session]]


def _open_autocommit(current: _ProcessEngine) -> tuple[Connection, Session]:
    """Check a connection out of ``current``'s pool in autocommit; return it and a session on it."""
    connection = current.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return connection, current.sessions(bind=connection)


class KeptAutocommit:
    """An :func:`autocommit` session kept open between uses, for callers that take turns.

    :func:`autocommit` checks a connection out of the pool and wraps it in a
    ``Connection`` and a ``Session``, and closes all three when its block
    ends: about 95 µs of CPU a use, more than the intake's one statement
    costs on the client (55 µs, docs/benchmarks.md, series 18). The intake's
    group leader records one group at a time (``shared.services.group_commit``),
    so it keeps one of each instead. A lock takes the uses in turn.

    What a use sees is what :func:`autocommit` gives: every statement commits
    as it completes, and the after-commit callbacks run when the block ends,
    whether it raised or not. Between uses nothing is held but an idle
    connection (no transaction, no lock). Before each use the connection's
    socket is looked at, as the pool's checkout does, so one the server
    closed (a restart) is replaced; after a block that raised, the connection
    is discarded; after every use the session forgets the rows it loaded and
    empties its ``info`` (where ``after_commit`` and the broker's outbox keep
    a use's messages), so no use is served, or sends, another's. A new engine
    (:func:`reset_engine`, a fork) gets a new connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: tuple[_ProcessEngine, Connection, Session] | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Yield the kept session, checking a connection out of the pool when there is none.

        Raises:
            sqlalchemy.exc.TimeoutError: no connection came free in the pool's wait.
            sqlalchemy.exc.OperationalError: the database is unreachable.
        """
        with self._lock:
            session = self._session()
            failed = False
            try:
                yield session
            except BaseException:
                failed = True
                raise
            finally:
                callbacks = session.info.pop("after_commit", [])
                # What a use leaves in the session (its after-commit outbox, its rows)
                # is the use's own: the next one starts as a new session would.
                session.info.clear()
                if failed:
                    self._discard()
                else:
                    session.expunge_all()
                _run_callbacks(callbacks)

    def _session(self) -> Session:
        """Return the kept session, replacing its connection if the server closed it."""
        current = _process_engine()
        kept = self._kept
        if kept is not None:
            engine, connection, session = kept
            if engine is current and not _closed_by_server(connection.connection.dbapi_connection):
                return session
            self._discard()
        connection, session = _open_autocommit(current)
        self._kept = (current, connection, session)
        return session

    def _discard(self) -> None:
        """Close the kept session and invalidate its connection (it never returns to the pool)."""
        kept, self._kept = self._kept, None
        if kept is None:
            return
        _, connection, session = kept
        with contextlib.suppress(Exception):
            session.close()
        with contextlib.suppress(Exception):
            connection.invalidate()
            connection.close()


def driver_rows(session: Session, sql: str, parameters: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run ``sql`` with psycopg itself on the session's connection; return its rows as tuples.

    For the intake's statement, run once per group of submissions: SQLAlchemy's
    statement and result layers and the column descriptions it reads from
    the cursor cost about as much client CPU as the rest of the statement
    (docs/benchmarks.md, series 15). The statement runs in the session's
    database transaction (or its autocommit, :func:`autocommit`), prepared
    on the server at its first execution on a connection.

    Args:
        sql: the statement, with psycopg's ``%s`` placeholders.
        parameters: one value per placeholder, as psycopg adapts them.

    Raises:
        sqlalchemy.exc.DBAPIError: what psycopg raised, wrapped as SQLAlchemy
            wraps it (so :func:`is_transient` judges it as any other).
    """
    driver = session.connection().connection.driver_connection
    assert driver is not None  # a checked-out connection
    try:
        return driver.execute(sql, parameters, prepare=True).fetchall()
    except psycopg.Error as error:
        # A lost connection is discarded when the session rolls back (SQLAlchemy
        # sees the disconnect then) or at the pool's next checkout.
        raise exc.DBAPIError.instance(
            sql, parameters, error, psycopg.Error, connection_invalidated=driver.closed
        ) from error


def _run_callbacks(callbacks: list[Callable[[], None]]) -> None:
    """Run after-commit callbacks in order; log one that raises and go on: the commit stands."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _log.warning("after-commit callback %r failed", callback, exc_info=True)


class _AfterCommitThread:
    """Run lists of after-commit callbacks in order on one daemon thread of this process.

    Started on first use in each process (a forked Celery pool process gets its
    own). Callbacks are hints and messages whose loss the sweeps repair, so
    a process that dies with some still queued loses nothing durable.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._queue: queue.SimpleQueue[list[Callable[[], None]] | threading.Event] = (
            queue.SimpleQueue()
        )

    def submit(self, callbacks: list[Callable[[], None]]) -> None:
        """Queue ``callbacks`` to run after everything queued before them."""
        with self._guard:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                threading.Thread(
                    target=self._run, args=(self._queue,), name="after-commit", daemon=True
                ).start()
            self._queue.put(callbacks)

    def wait_idle(self, timeout_seconds: float = 10.0) -> bool:
        """Wait until everything queued so far has run; return False on timeout."""
        with self._guard:
            if self._pid != os.getpid():
                return True  # nothing was queued in this process
            done = threading.Event()
            self._queue.put(done)
        return done.wait(timeout_seconds)

    @staticmethod
    def _run(jobs: queue.SimpleQueue[list[Callable[[], None]] | threading.Event]) -> None:
        while True:
            job = jobs.get()
            if isinstance(job, threading.Event):
                job.set()
            else:
                _run_callbacks(job)


_after_commit_thread = _AfterCommitThread()


def wait_for_after_commit(timeout_seconds: float = 10.0) -> bool:
    """Wait until the after-commit callbacks of lock holders queued so far have run.

    A drain's callbacks run on a thread of their own (:func:`transaction`);
    a caller that must see their effect (the worker before it acknowledges,
    a test) waits here. Returns False if they did not finish in ``timeout_seconds``.
    """
    return _after_commit_thread.wait_idle(timeout_seconds)


class LockBusy(Exception):
    """Another session holds the advisory lock; try again shortly (see :func:`is_transient`)."""


@contextlib.contextmanager
def advisory_lock(key: str) -> Iterator[Connection]:
    """Hold PostgreSQL's session-level advisory lock on ``key`` and yield its connection.

    Does not wait: a worker process blocked on a lane another process drains
    would be a process doing nothing. Pass the connection to
    :func:`transaction` to run several transactions under one lock. If this
    process dies, PostgreSQL drops the lock with the connection; if the lock
    cannot be released cleanly the connection is discarded, never returned to
    the pool still holding it.

    The lock covers database work only. The :func:`after_commit` callbacks of
    transactions on this connection (broker publishes, Redis wake-ups,
    metrics) run on the process's after-commit thread, in commit order, so a
    slow or unreachable broker never holds ``key``: while a batch's webhook
    deliveries are published, the holder already applies the next batch.

    Raises:
        LockBusy: another session holds the lock.
    """
    with get_engine().connect() as connection:
        raw = connection.connection.dbapi_connection
        acquired = _outside_transaction(
            raw, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
        )
        if not acquired:
            raise LockBusy(f"advisory lock {key!r} is held by another session")
        # Read once: reading it again from a connection invalidated by a
        # lost session would try to reconnect and raise.
        info = connection.info
        info[_LOCK_HELD] = True
        try:
            yield connection
        finally:
            info.pop(_LOCK_HELD, None)
            try:
                connection.rollback()
                _outside_transaction(raw, "SELECT pg_advisory_unlock_all()")
            except Exception:
                connection.invalidate()


@dataclasses.dataclass(frozen=True, slots=True)
class IdleLockHolder:
    """A session that held an advisory lock while idle, and was ended for it.

    Attributes:
        key: the lock's key, as given to :func:`advisory_lock`.
        pid: the server process of the session.
        idle_seconds: how long it had been idle, outside any transaction.
        client: its client's address and port (``host:port``), to find the process.
    """

    key: str
    pid: int
    idle_seconds: float
    client: str


#: Sessions holding one of the keys' locks, idle outside a transaction for too long,
#: each ended by ``pg_terminate_backend``, which waits up to 5 s for the session to
#: exit, and so for its locks to be released. A bigint advisory key shows in pg_locks as
#: its high half in ``classid``, its low half in ``objid``, with ``objsubid`` 1
#: (PostgreSQL docs, "pg_locks").
_END_IDLE_LOCK_HOLDERS_SQL = text(
    """
    SELECT k.key, a.pid,
           extract(epoch FROM now() - a.state_change)::float8 AS idle_seconds,
           coalesce(host(a.client_addr), 'local') || ':' || coalesce(a.client_port, -1) AS client,
           pg_terminate_backend(a.pid, 5000) AS ended
    FROM unnest(CAST(:keys AS text[])) AS k(key)
    JOIN pg_locks l
      ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND l.classid = ((hashtextextended(k.key, 0) >> 32) & 4294967295)::oid
     AND l.objid = (hashtextextended(k.key, 0) & 4294967295)::oid
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.state = 'idle' AND a.pid <> pg_backend_pid() AND a.usename = current_user
      AND a.state_change < now() - make_interval(secs => :idle_seconds)
    """
)


def end_idle_lock_holders(
    session: Session, keys: Sequence[str], *, idle_seconds: float
) -> list[IdleLockHolder]:
    """End every session that holds one of ``keys``' advisory locks while idle for over ``idle_seconds``.

    A holder of :func:`advisory_lock` works while it holds the lock. A session
    that stays idle, outside any transaction, with the lock held belongs to a
    process that is stuck (or stopped) between two statements, and every
    other taker of the key gets :class:`LockBusy` for as long as it stays so.
    Ending that session (``pg_terminate_backend``, PostgreSQL docs, "Server
    Signaling Functions") releases the lock. Whatever the stuck process
    committed stands. Its next statement fails, so it writes nothing more.
    A session idle *inside* a transaction is ended by the server already
    (``idle_in_transaction_session_timeout``, :func:`create_db_engine`).
    Only sessions of the current role are looked at: Tally's processes share
    one, and a role may always signal its own sessions.

    Args:
        keys: the advisory lock keys to look at (the strings given to :func:`advisory_lock`).
        idle_seconds: how long a holder may stay idle before it is ended, in seconds.

    Returns:
        The sessions ended (their locks released), one per key held.
    """
    rows = session.execute(
        _END_IDLE_LOCK_HOLDERS_SQL, {"keys": list(keys), "idle_seconds": idle_seconds}
    ).all()
    return [IdleLockHolder(r.key, r.pid, r.idle_seconds, r.client) for r in rows if r.ended]


def _outside_transaction(raw: Any, sql: str, params: tuple[object, ...] = ()) -> Any:
    """Run one statement on the psycopg connection ``raw`` in autocommit; return its value.

    A session-level advisory lock outlives transactions, so taking or releasing
    it needs none: in autocommit mode psycopg sends no BEGIN and COMMIT around
    the statement, two round trips each time, on the drain's hot path.
    """
    raw.autocommit = True
    try:
        return raw.execute(sql, params).fetchone()[0]
    finally:
        raw.autocommit = False


#: ``set_config(name, value, is_local => true)``: as text, not a ``select()`` built
#: per call, which cost 180 against 110 µs of CPU (docs/benchmarks.md, series 12).
_SET_LOCAL_SQL = text("SELECT set_config(:name, :value, true)")


def set_local(session: Session, **settings: str) -> None:
    """Set PostgreSQL run-time settings for the rest of this database transaction only.

    ``SET LOCAL`` (PostgreSQL docs, "SET"): the setting ends with the commit or
    rollback, so a pooled connection never keeps it. Names are Tally's own
    constants, never input; values are bound as parameters.
    """
    for name, value in settings.items():
        session.execute(_SET_LOCAL_SQL, {"name": name, "value": value})


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction ``session`` is in has committed.

    Used to publish broker messages only for rows that are durable (the
    pattern of pypi/warehouse's ``tasks.py``). Nothing runs on rollback.
    """
    session.info.setdefault("after_commit", []).append(callback)


def is_transient(error: BaseException) -> bool:
    """Tell whether re-running the whole database transaction may succeed.

    True for lost or refused connections, for SQLSTATEs 40001, 40P01,
    55P03, 57014, 57P01-57P03 and class 08 (PostgreSQL docs, Appendix A), and
    for :class:`LockBusy`.
    """
    if isinstance(error, LockBusy):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        sqlstate = getattr(error, "sqlstate", None)
        return sqlstate is None or sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    if isinstance(error, psycopg.Error):
        sqlstate = error.sqlstate or ""
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")
    return isinstance(error, exc.TimeoutError | ConnectionError)
