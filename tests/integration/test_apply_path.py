"""The apply path in-process: lane order, duplicate delivery, attempt counting, poison isolation."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from sqlalchemy import text

from shared import db
from shared.ledger.states import TransactionType
from shared.services.intake import TransactionRequest, submit_transaction
from shared.services.processor import apply_batch, claim_batch, drain_lane
from tests.helpers import assert_ledger_consistent, balance_minor, statuses

API_KEY_ID: uuid.UUID | None = None


def api_key_id() -> uuid.UUID:
    global API_KEY_ID
    if API_KEY_ID is None:
        from shared.services.api_keys import Role, create_api_key

        with db.transaction() as session:
            API_KEY_ID = create_api_key(session, role=Role.SERVICE, name="apply-path")[0].id
    return API_KEY_ID


def record(type_: str, amount_minor: int, *, source: Any = None, destination: Any = None) -> str:
    request = TransactionRequest(TransactionType(type_), amount_minor, "SGD", source, destination)
    with db.transaction() as session:
        transaction, _ = submit_transaction(
            session, request, api_key_id=api_key_id(), idempotency_key=str(uuid.uuid4()),
            publish=lambda _: None,
        )  # fmt: skip
    return str(transaction.id)


def drain(lane: Any, **kwargs: Any) -> Any:
    options = {"batch_size": 50, "attempts_max": 3, **kwargs}
    return drain_lane(lane, **options)


def test_drain_applies_debits_in_acceptance_order(wallet_factory: Any) -> None:
    a = wallet_factory()
    record("deposit", 10_000, destination=a)
    withdrawals = [record("withdrawal", 1_500, source=a) for _ in range(10)]
    report = drain(a, batch_size=4)
    assert report.settled == 11 and report.failed == 4 and report.batches == 3
    result = statuses(withdrawals)
    assert [result[w]["status"] for w in withdrawals] == ["completed"] * 6 + ["failed"] * 4
    assert {result[w]["failure_code"] for w in withdrawals[6:]} == {"insufficient_funds"}
    assert balance_minor(a) == 1_000
    assert_ledger_consistent()


def test_second_drain_finds_nothing(wallet_factory: Any) -> None:
    a = wallet_factory()
    deposit = record("deposit", 500, destination=a)
    assert drain(a).settled == 1
    report = drain(a)
    assert (report.settled, report.batches) == (0, 0)
    assert statuses([deposit])[deposit]["attempts"] == 1


def test_duplicate_apply_of_a_claimed_batch_is_a_no_op(wallet_factory: Any) -> None:
    a = wallet_factory()
    deposit = record("deposit", 500, destination=a)
    with db.transaction() as session:
        claim = claim_batch(session, a, batch_size=10, attempts_max=3)
    assert claim is not None
    for expected in (1, 0):  # a redelivered message re-runs the apply: it must change nothing
        with db.transaction() as session:
            assert sum(apply_batch(session, claim.ids).values()) == expected
    assert balance_minor(a) == 500 and statuses([deposit])[deposit]["status"] == "completed"


def test_unfinished_attempt_is_counted_and_its_transaction_applied_alone(
    wallet_factory: Any,
) -> None:
    a = wallet_factory()
    first = record("deposit", 100, destination=a)
    others = [record("deposit", 100, destination=a) for _ in range(3)]
    with db.transaction() as session:  # a worker claims all four, then dies before applying
        claim = claim_batch(session, a, batch_size=10, attempts_max=3)
    assert claim is not None and len(claim.ids) == 4
    with db.transaction() as session:
        suspect = claim_batch(session, a, batch_size=10, attempts_max=3)
    assert suspect is not None and list(map(str, suspect.ids)) == [first]
    assert statuses([first])[first]["attempts"] == 2
    report = drain(a)
    assert report.settled == 4 and all(
        s["status"] == "completed" for s in statuses(others).values()
    )


def test_transaction_past_its_attempts_fails_retries_exhausted(wallet_factory: Any) -> None:
    a = wallet_factory()
    poison = record("deposit", 100, destination=a)
    after = record("deposit", 200, destination=a)
    for _ in range(3):  # three attempts that never finished
        with db.transaction() as session:
            claim_batch(session, a, batch_size=1, attempts_max=3)
    report = drain(a)
    result = statuses([poison, after])
    assert (result[poison]["status"], result[poison]["failure_code"]) == (
        "failed",
        "retries_exhausted",
    )
    assert result[after]["status"] == "completed" and report.settled == 2
    assert balance_minor(a) == 200


def test_frozen_wallet_fails_wallet_frozen(wallet_factory: Any) -> None:
    a, b = wallet_factory(), wallet_factory()
    record("deposit", 1_000, destination=a)
    drain(a)
    with db.transaction() as session:
        session.execute(text("UPDATE wallets SET status = 'frozen' WHERE id = :id"), {"id": b})
    transfer = record("transfer", 100, source=a, destination=b)
    drain(a)
    assert statuses([transfer])[transfer]["failure_code"] == "wallet_frozen"
    assert balance_minor(a) == 1_000


def test_drain_yields_after_batches_max(wallet_factory: Any) -> None:
    a = wallet_factory()
    for _ in range(5):
        record("deposit", 1, destination=a)
    report = drain(a, batch_size=2, batches_max=2)
    assert report.more and report.settled == 4
    assert drain(a).settled == 1


def test_concurrent_drains_of_one_lane_count_one_attempt_each(wallet_factory: Any) -> None:
    import threading

    a = wallet_factory()
    ids = [record("deposit", 10, destination=a) for _ in range(300)]
    barrier = threading.Barrier(4)

    def one_drain() -> None:
        barrier.wait()
        with contextlib.suppress(db.LockBusy):  # another drain has the lane: it does the work
            drain(a, batch_size=20)

    threads = [threading.Thread(target=one_drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    result = statuses(ids)
    assert {r["status"] for r in result.values()} == {"completed"}
    assert {r["attempts"] for r in result.values()} == {1}
    assert balance_minor(a) == 3_000


def test_a_drain_of_a_lane_being_drained_backs_off_at_once(wallet_factory: Any) -> None:
    import pytest

    a = wallet_factory()
    record("deposit", 10, destination=a)
    with db.advisory_lock(f"lane:{a}"), pytest.raises(db.LockBusy):
        drain(a)
    assert drain(a).settled == 1  # the lock went with its holder
