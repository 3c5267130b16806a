"""Session set-up: real PostgreSQL and Redis, migrated, shared by every test.

With ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` unset, embedded servers
(cli/devservers.py) start once per session on free loopback ports and are
stopped at the end. The environment is set before any Tally module reads its
settings, so the API, services and the Celery processes the pipeline tests
start all reach the same servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.devservers import EmbeddedPostgres, EmbeddedRedis, free_port

#: Settings for the tests' processes: short sweeps and backoffs so faults heal in seconds.
TEST_SETTINGS = {
    "TALLY_CURRENCIES": "SGD,JPY,USD,EUR,GBP",
    "TALLY_SWEEP_INTERVAL_SECONDS": "1",
    "TALLY_HOLD_EXPIRY_INTERVAL_SECONDS": "1",
    "TALLY_SWEEP_PENDING_AGE_SECONDS": "2",
    "TALLY_RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "TALLY_RETRY_BACKOFF_MAX_SECONDS": "2",
    "TALLY_TASK_RETRIES_MAX": "30",
    "TALLY_BEAT_LOCK_TIMEOUT_SECONDS": "6",
    "TALLY_LOG_LEVEL": "WARNING",
    # Receivers are real HTTP servers on loopback, started by the tests.
    "TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "TALLY_WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
    "TALLY_DATA_DIR": str(Path(tempfile.gettempdir()) / "tally-test-data"),
}

_servers: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Start (or adopt) PostgreSQL and Redis, export their URLs, migrate."""
    os.environ.update(TEST_SETTINGS)
    database_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    root = Path(tempfile.mkdtemp(prefix="tally-test-"))
    _servers["root"] = root
    if database_url is None:
        postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=False)
        _servers["postgres"] = postgres
        postgres.start()
        database_url = postgres.create_database("tally_test")
    if redis_url is None:
        # Durable like production (AOF), so a restart keeps beat's schedule and lock;
        # lost messages are simulated by deleting them.
        redis_server = EmbeddedRedis(root / "redis", free_port(), durable=True)
        _servers["redis"] = redis_server
        redis_url = redis_server.start()
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    from shared.migrations import migrate_database

    migrate_database()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the servers this session started and delete their data."""
    from shared.db import reset_engine

    reset_engine()
    for name in ("redis", "postgres"):
        server = _servers.pop(name, None)
        if server is not None:
            server.stop()
    root = _servers.pop("root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> EmbeddedPostgres:
    """Return the embedded PostgreSQL, to stop and restart it; skip on an external one."""
    server = _servers.get("postgres")
    if server is None:
        pytest.skip("needs the embedded PostgreSQL (TEST_DATABASE_URL is set)")
    return server


@pytest.fixture(scope="session")
def redis_server() -> EmbeddedRedis:
    """Return the embedded Redis, to stop and restart it; skip on an external one."""
    server = _servers.get("redis")
    if server is None:
        pytest.skip("needs the embedded Redis (TEST_REDIS_URL is set)")
    return server


@pytest.fixture(scope="session")
def redis_client() -> Any:
    """Return a redis-py client on the test Redis."""
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


@pytest.fixture
def db_session() -> Iterator[Any]:
    """Yield a Session inside a transaction that is rolled back after the test.

    Code under test that commits only releases a savepoint
    (SQLAlchemy, "Joining a Session into an External Transaction").
    """
    from sqlalchemy.orm import Session

    from shared.db import get_engine

    connection = get_engine().connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture(scope="session")
def app() -> Any:
    """Return the Flask app (one per session)."""
    from api import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def client(app: Any) -> Any:
    """Return a Flask test client."""
    return app.test_client()


def _create_key(role: str) -> tuple[uuid.UUID, str]:
    from shared import db
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        key, secret = create_api_key(session, role=Role(role), name=f"test {role}")
    return key.id, secret


@pytest.fixture(scope="session")
def service_headers() -> dict[str, str]:
    """Return Authorization headers of a ``service`` key."""
    return {"Authorization": f"Bearer {_create_key('service')[1]}"}


@pytest.fixture(scope="session")
def ops_headers() -> dict[str, str]:
    """Return Authorization headers of an ``ops`` key."""
    return {"Authorization": f"Bearer {_create_key('ops')[1]}"}


@pytest.fixture
def wallet_factory() -> Callable[..., uuid.UUID]:
    """Return ``make(currency="SGD", owner_ref=None) -> wallet id``: committed, unique owner."""
    from shared import db
    from shared.services.wallets import create_wallet

    def make(currency: str = "SGD", owner_ref: str | None = None) -> uuid.UUID:
        with db.transaction() as session:
            wallet = create_wallet(
                session, owner_ref=owner_ref or f"test-{uuid.uuid4()}", currency=currency
            )
        return wallet.id

    return make


@pytest.fixture
def backpressure_bound(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Give the in-process API a backpressure of the given bound and stall (read from Redis).

    Call it with ``backlog_max`` and ``stall_seconds``; it returns the
    ``shared.services.backpressure.Backpressure`` the API then uses, until the test ends.
    """
    from shared.services import backpressure as intake_backpressure
    from shared.wakeups import read_applied_sequence

    def install(*, backlog_max: int, stall_seconds: float) -> Any:
        backpressure = intake_backpressure.Backpressure(
            read_applied_sequence, backlog_max=backlog_max, stall_seconds=stall_seconds
        )
        monkeypatch.setattr(intake_backpressure, "for_this_process", lambda: backpressure)
        return backpressure

    return install


@pytest.fixture(scope="module")
def worker() -> Iterator[Any]:
    """Run one real Celery worker (prefork, 2 processes) for the test module."""
    from tests.servers import CeleryProcess

    process = CeleryProcess("worker", "worker", concurrency=2).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def beat() -> Iterator[Any]:
    """Run a real Celery beat (celery-redbeat) for the test module: sweeps every second."""
    from tests.servers import CeleryProcess

    process = CeleryProcess("beat", "beat").start()
    yield process
    process.stop()
