"""The stuck-transaction sweep (docs/architecture.md, invariant 4) with a real worker and a real beat."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared import db
from shared.ledger.states import TransactionType
from shared.services.intake import TransactionRequest, submit_transaction
from shared.services.processor import STREAM_LOCK_KEY
from tests.helpers import deposit_body, drain_messages_lost, stuck_lock_holder, wait_terminal
from tests.oracles import Book, assert_explained
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline


def test_transaction_whose_message_never_reached_the_broker_is_completed_by_the_sweep(
    wallet_factory: Any, worker: Any, beat: Any
) -> None:
    from shared.services.api_keys import Role, create_api_key

    wallet_id = wallet_factory()
    book = Book([wallet_id])
    sent_at = time.monotonic()
    with db.transaction() as session:
        key_id = create_api_key(session, role=Role.SERVICE, name="sweep")[0].id
    with drain_messages_lost(), db.transaction() as session:
        transaction, _ = submit_transaction(
            session, TransactionRequest(TransactionType.DEPOSIT, 700, "SGD", None, wallet_id),
            api_key_id=key_id, idempotency_key="never-published",
        )  # fmt: skip
    book.record(transaction.id, deposit_body(wallet_id, "7.00"), sent_at=sent_at)
    wait_terminal(book.ids, timeout_seconds=60, context=beat.log())
    assert_explained(book, context=beat.log())


def test_redis_down_at_intake_still_answers_202_and_the_sweep_enqueues(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any, beat: Any,
    redis_server: Any,
) -> None:  # fmt: skip
    wallet_id = wallet_factory()
    book = Book([wallet_id])
    redis_server.stop()
    try:
        # A publish that retried forever would hang here until pytest-timeout fails the test.
        response = book.submit(client, service_headers, deposit_body(wallet_id, "42.00"))
        assert response.status_code == 202
        assert client.get("/readyz").status_code == 503
    finally:
        redis_server.start()
    wait_terminal(book.ids, timeout_seconds=90, context=worker.log())
    assert_explained(book, context=worker.log())


def test_the_stream_whose_lock_a_stuck_session_holds_drains_once_the_sweep_ends_it(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, beat: Any
) -> None:
    """The holder here is the test's own idle session, as a drain stopped mid-way would leave."""
    wallet_id = wallet_factory()
    book = Book([wallet_id])
    worker = CeleryProcess(
        "worker", "stuck-lock-worker", env={"TALLY_STREAM_LOCK_IDLE_SECONDS": "1"}
    ).start()
    try:
        with stuck_lock_holder(STREAM_LOCK_KEY) as raised:
            response = book.submit(client, service_headers, deposit_body(wallet_id, "3.00"))
            transaction_id = response.get_json()["id"]
            result = wait_terminal([transaction_id], timeout_seconds=90, context=worker.log())
        assert result[transaction_id]["status"] == "completed"
        assert len(raised) == 1  # the stuck holder's next statement failed
        assert "stream_lock_released" in worker.log_path.read_text(errors="replace")
        assert_explained(book, context=worker.log())
    finally:
        worker.stop()
