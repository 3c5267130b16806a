"""Redis emptied or restarted under a running worker: every publisher still reaches it.

An emptied Redis (``FLUSHALL``, a restart without persistence) also loses
kombu's ``_kombu.binding.*`` sets; a publish routed through an exchange would
then be dropped into a dead-letter queue with only a warning. Tally publishes
through the anonymous exchange straight onto the queue (``broker``), so the
API's, the sweep's and ``tally retry``'s messages all still reach the worker.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from cli.main import main
from shared import db
from shared.ledger.states import TransactionType
from shared.services.api_keys import Role, create_api_key
from shared.services.intake import TransactionRequest, submit_transaction
from tests.helpers import deposit_body, drain_messages_lost, wait_for, wait_terminal
from tests.oracles import Book, assert_explained
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline


def test_api_sweep_and_retry_reach_the_worker_after_redis_is_emptied(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: Any,
    redis_client: Any,
) -> None:
    wallet_id = wallet_factory()
    book = Book([wallet_id])
    withdrawal = {"type": "withdrawal", "amount": "5.00", "currency": "SGD",
                  "source_wallet_id": str(wallet_id)}  # fmt: skip
    failed = book.submit(client, service_headers, withdrawal).get_json()["id"]
    assert wait_terminal([failed], context=worker.log())[failed]["failure_code"] == (
        "insufficient_funds"
    )
    redis_client.flushall()

    # The API's publish (the first after the flush: nothing is declared any more).
    response = book.submit(client, service_headers, deposit_body(wallet_id, "10.00"))
    deposit = response.get_json()["id"]
    assert wait_terminal([deposit], context=worker.log())[deposit]["status"] == "completed"

    # `tally retry`'s publish.
    redis_client.flushall()
    result = CliRunner().invoke(main, ["retry", failed])
    assert result.exit_code == 0, result.output
    assert wait_terminal([failed], context=worker.log())[failed]["status"] == "completed"

    # The sweep's publish, from a beat started after the flush (a supervisor restarts
    # beat when its redbeat lock vanishes with the data).
    redis_client.flushall()
    sent_at = time.monotonic()
    with db.transaction() as session:
        key_id = create_api_key(session, role=Role.SERVICE, name="flushed")[0].id
    with drain_messages_lost(), db.transaction() as session:
        unpublished, _ = submit_transaction(
            session, TransactionRequest(TransactionType.DEPOSIT, 300, "SGD", None, wallet_id),
            api_key_id=key_id, idempotency_key=str(uuid.uuid4()),
        )  # fmt: skip
    swept = book.record(unpublished.id, deposit_body(wallet_id, "3.00"), sent_at=sent_at)
    beat = CeleryProcess("beat", "beat-after-flush").start()
    try:
        assert wait_terminal([swept], context=beat.log())[swept]["status"] == "completed"
    finally:
        beat.stop()
    # The retried withdrawal is no longer failed: nothing in the end is.
    assert_explained(book, context=worker.log())


def test_worker_consumes_again_after_redis_restarts_and_readyz_says_broker_down(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: Any,
    redis_server: Any,
) -> None:
    wallet_id = wallet_factory()
    book = Book([wallet_id])
    redis_server.stop()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["checks"] == {"database": "ok", "broker": "down"}
        # Accepted while the broker is down: the row is durable, the sweep publishes later.
        during = book.submit(client, service_headers, deposit_body(wallet_id, "1.00"))
        assert during.status_code == 202
    finally:
        redis_server.start()
    after = book.submit(client, service_headers, deposit_body(wallet_id, "2.00")).get_json()["id"]
    # No beat runs in this module: `after` completes only if the worker reconnected and
    # consumes again; `during`, never published, is in the same lane, so the same drain
    # applies it first.
    during_id = during.get_json()["id"]
    result = wait_terminal([during_id, after], timeout_seconds=90, context=worker.log())
    assert {result[t]["status"] for t in (during_id, after)} == {"completed"}
    assert client.get("/readyz").status_code == 200
    assert_explained(book, context=worker.log())


def test_worker_keeps_running_when_redis_goes_down_under_a_drain_in_flight(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: Any,
    redis_server: Any,
) -> None:
    """Celery 5.7.0 exits here (docs/operations.md, "Celery version"); 5.6 reconnects.

    The drain waits on a wallet row this test holds, so its message is delivered
    and not yet acknowledged when Redis stops: the consumer must close that
    channel and reconnect, not die on the unacknowledged message.
    """
    wallet_id = wallet_factory()
    book = Book([wallet_id])
    with db.get_engine().connect() as holder:
        holder.execute(
            text("SELECT 1 FROM wallets WHERE id = :id FOR NO KEY UPDATE"), {"id": wallet_id}
        )
        first = book.submit(client, service_headers, deposit_body(wallet_id, "1.00"))
        assert first.status_code == 202
        wait_for(
            lambda: _sessions_waiting_on_a_lock() > 0,
            timeout_seconds=30,
            what="the drain waiting on the wallet row",
            log=worker.log,
        )
        logged_before = len(worker.log_path.read_text(errors="replace"))
        redis_server.stop()
        try:
            wait_for(
                lambda: (
                    "Connection to broker lost"
                    in worker.log_path.read_text(errors="replace")[logged_before:]
                ),
                timeout_seconds=30,
                what="the worker noticing that Redis is gone",
                log=worker.log,
            )
        finally:
            holder.rollback()
            redis_server.start()
    wait_for(
        lambda: (
            worker.process.poll() is not None
            or "Connected to" in worker.log_path.read_text(errors="replace")[logged_before:]
        ),
        timeout_seconds=60,
        what="the worker reconnecting or exiting",
        log=worker.log,
    )
    assert worker.process.poll() is None, worker.log()
    # The first drain's retry could not be published; a later message for the same
    # lane drains both (no beat runs in this module).
    second = book.submit(client, service_headers, deposit_body(wallet_id, "2.00")).get_json()["id"]
    first_id = first.get_json()["id"]
    result = wait_terminal([first_id, second], timeout_seconds=90, context=worker.log())
    assert {result[t]["status"] for t in (first_id, second)} == {"completed"}
    assert_explained(book, context=worker.log())


def _sessions_waiting_on_a_lock() -> int:
    with db.transaction() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )
