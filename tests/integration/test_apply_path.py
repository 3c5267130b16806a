"""The apply path in-process: acceptance order, duplicate delivery, attempt counting, poison isolation."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared import db
from shared.ledger.states import TransactionType
from shared.models import Transaction
from shared.services import processor
from shared.services.apply import apply_batch
from shared.services.intake import TransactionRequest, submit_transaction
from shared.services.processor import STREAM_LOCK_KEY, claim_batch
from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    drain_stream,
    statuses,
    stuck_lock_holder,
)

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
        )  # fmt: skip
    return str(transaction.id)


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    """Start each test with nothing pending, so the stream holds only the test's own work."""
    drain_stream()
    yield


def drain(**kwargs: Any) -> Any:
    options = {"batch_size": 50, "attempts_max": 3, **kwargs}
    return drain_stream(**options)


def claim(*, batch_size: int) -> Any:
    with db.transaction() as session:
        return claim_batch(session, batch_size=batch_size, attempts_max=3)


def test_drain_applies_debits_in_acceptance_order(wallet_factory: Any) -> None:
    a = wallet_factory()
    record("deposit", 10_000, destination=a)
    withdrawals = [record("withdrawal", 1_500, source=a) for _ in range(10)]
    report = drain(batch_size=4)
    assert report.settled == 11 and report.failed == 4 and report.batches == 3
    result = statuses(withdrawals)
    assert [result[w]["status"] for w in withdrawals] == ["completed"] * 6 + ["failed"] * 4
    assert {result[w]["failure_code"] for w in withdrawals[6:]} == {"insufficient_funds"}
    assert balance_minor(a) == 1_000
    assert_ledger_consistent()


def test_second_drain_finds_nothing(wallet_factory: Any) -> None:
    a = wallet_factory()
    deposit = record("deposit", 500, destination=a)
    assert drain().settled == 1
    report = drain()
    assert (report.settled, report.batches) == (0, 0)
    assert statuses([deposit])[deposit]["attempts"] == 1


def test_duplicate_apply_of_a_claimed_batch_is_a_no_op(wallet_factory: Any) -> None:
    a = wallet_factory()
    deposit = record("deposit", 500, destination=a)
    claimed = claim(batch_size=10)
    assert claimed is not None
    for expected in (1, 0):  # a redelivered message re-runs the apply: it must change nothing
        with db.transaction() as session:
            assert sum(apply_batch(session, claimed.ids).statuses.values()) == expected
    assert balance_minor(a) == 500 and statuses([deposit])[deposit]["status"] == "completed"


def test_unfinished_attempt_is_counted_and_its_transaction_applied_alone(
    wallet_factory: Any,
) -> None:
    a = wallet_factory()
    first = record("deposit", 100, destination=a)
    others = [record("deposit", 100, destination=a) for _ in range(3)]
    claimed = claim(batch_size=10)  # a worker claims all four, then dies before applying
    assert claimed is not None and len(claimed.ids) == 4
    suspect = claim(batch_size=10)
    assert suspect is not None and list(map(str, suspect.ids)) == [first]
    # The attempt that died is counted on each of the four; the one in flight when it ends.
    assert {s["attempts"] for s in statuses([first, *others]).values()} == {1}
    report = drain()
    assert report.settled == 4 and all(
        s["status"] == "completed" for s in statuses(others).values()
    )
    assert statuses([first])[first]["attempts"] == 3  # the dead attempt, the suspect's, the drain's


def test_transaction_past_its_attempts_fails_retries_exhausted(wallet_factory: Any) -> None:
    a = wallet_factory()
    poison = record("deposit", 100, destination=a)
    after = record("deposit", 200, destination=a)
    for _ in range(3):  # three attempts that never finished
        claim(batch_size=1)
    report = drain()
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
    drain()
    with db.transaction() as session:
        session.execute(text("UPDATE wallets SET status = 'frozen' WHERE id = :id"), {"id": b})
    transfer = record("transfer", 100, source=a, destination=b)
    drain()
    assert statuses([transfer])[transfer]["failure_code"] == "wallet_frozen"
    assert balance_minor(a) == 1_000


def test_drain_yields_after_batches_max(wallet_factory: Any) -> None:
    a = wallet_factory()
    for _ in range(5):
        record("deposit", 1, destination=a)
    report = drain(batch_size=2, batches_max=2)
    assert report.more and report.settled == 4
    assert drain().settled == 1


def test_concurrent_drains_count_one_attempt_each(wallet_factory: Any) -> None:
    import threading

    a = wallet_factory()
    ids = [record("deposit", 10, destination=a) for _ in range(300)]
    barrier = threading.Barrier(4)

    def one_drain() -> None:
        barrier.wait()
        with contextlib.suppress(db.LockBusy):  # another drain has the stream: it does the work
            drain(batch_size=20)

    threads = [threading.Thread(target=one_drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    drain()  # whatever a drain that found the lock held left, as its requeued message would
    result = statuses(ids)
    assert {r["status"] for r in result.values()} == {"completed"}
    assert {r["attempts"] for r in result.values()} == {1}
    assert balance_minor(a) == 3_000


def test_a_drain_of_the_stream_being_drained_backs_off_at_once(wallet_factory: Any) -> None:
    a = wallet_factory()
    record("deposit", 10, destination=a)
    with db.advisory_lock(STREAM_LOCK_KEY), pytest.raises(db.LockBusy):
        drain()
    assert drain().settled == 1  # the lock went with its holder


def test_commits_under_an_advisory_lock_run_their_callbacks_without_holding_it_up() -> None:
    import threading

    release = threading.Event()
    ran: list[str] = []

    def slow_callback() -> None:
        release.wait(30)  # a broker that does not answer
        ran.append("slow")

    with db.advisory_lock("test:after-commit") as connection:
        with db.transaction(connection) as session:
            db.after_commit(session, slow_callback)
        with db.transaction(connection) as session:  # the holder goes on while it waits
            db.after_commit(session, lambda: ran.append("next"))
        assert ran == []
    release.set()
    assert db.wait_for_after_commit()
    assert ran == ["slow", "next"]  # in commit order


def test_a_drain_announces_what_it_settled_and_how_far_the_stream_is(
    wallet_factory: Any,
) -> None:
    a = wallet_factory()
    first = record("deposit", 10, destination=a)
    second = record("deposit", 20, destination=a)
    announced: list[tuple[list[str], int]] = []
    report = drain(settled=lambda ids, applied: announced.append(([str(i) for i in ids], applied)))
    assert report.settled == 2
    with db.transaction() as session:
        last = session.get(Transaction, uuid.UUID(second))
        assert last is not None
        assert announced == [([first, second], last.lane_sequence)]


def test_a_drain_takes_work_signalled_while_it_ran_without_a_new_message(
    wallet_factory: Any,
) -> None:
    a = wallet_factory()
    first = record("deposit", 10, destination=a)
    later: list[str] = []

    def signalled() -> bool:
        if later:
            return False
        later.append(record("deposit", 20, destination=a))  # committed while the drain ran
        return True

    report = drain(budget_seconds=60, signalled=signalled)
    assert report.settled == 2 and report.batches == 2
    assert {s["status"] for s in statuses([first, *later]).values()} == {"completed"}


def _gather_with(monkeypatch: pytest.MonkeyPatch, wait: Callable[[float], None]) -> None:
    """Make the drain's wait between batches call ``wait`` instead of sleeping."""
    clock = SimpleNamespace(monotonic=time.monotonic, perf_counter=time.perf_counter, sleep=wait)
    monkeypatch.setattr(processor, "time", clock)


def test_a_drain_gathers_what_arrives_after_it_emptied_the_stream_into_one_batch(
    wallet_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = wallet_factory()
    first = record("deposit", 10, destination=a)
    waits: list[float] = []
    later: list[str] = []

    def wait(seconds: float) -> None:  # three deposits are accepted while the drain gathers
        waits.append(seconds)
        if not later:
            later.extend(record("deposit", 1, destination=a) for _ in range(3))

    _gather_with(monkeypatch, wait)
    announced: list[list[str]] = []
    report = drain(
        gather_seconds=0.05, settled=lambda ids, _: announced.append([str(i) for i in ids])
    )
    assert announced == [[first], later]  # the three went as one batch
    assert report.batches == 2 and waits == [0.05, 0.05]  # after each claim that emptied the stream


def test_a_drain_waits_neither_before_its_first_claim_nor_after_a_full_batch(
    wallet_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = wallet_factory()
    ids = [record("deposit", 1, destination=a) for _ in range(5)]
    pending_at_wait: list[int] = []

    def wait(_: float) -> None:  # the batches before it are committed: count what is left
        pending_at_wait.append(sum(s["status"] == "pending" for s in statuses(ids).values()))

    _gather_with(monkeypatch, wait)
    announced: list[int] = []
    report = drain(batch_size=2, gather_seconds=0.05, settled=lambda i, _: announced.append(len(i)))
    assert announced == [2, 2, 1] and report.batches == 3
    assert pending_at_wait == [0]  # one wait, once the stream was empty


def test_a_drain_stops_at_its_budget_and_says_more(wallet_factory: Any) -> None:
    a = wallet_factory()
    for _ in range(5):
        record("deposit", 1, destination=a)
    report = drain(batch_size=2, budget_seconds=0)
    assert report.more and (report.settled, report.batches) == (2, 1)
    assert drain().settled == 3


def test_the_sweep_frees_the_stream_whose_lock_holder_sits_idle(wallet_factory: Any) -> None:
    from shared.services.sweeper import release_stuck_stream_lock

    a = wallet_factory()
    deposit = record("deposit", 10, destination=a)
    with stuck_lock_holder(STREAM_LOCK_KEY) as raised:
        with pytest.raises(db.LockBusy):
            drain()
        time.sleep(0.5)
        with db.transaction() as session:  # idle, but not yet for an hour
            assert release_stuck_stream_lock(session, idle_seconds=3600) is None
        with db.transaction() as session:
            freed = release_stuck_stream_lock(session, idle_seconds=0.2)
        assert freed is not None and freed.idle_seconds >= 0.2
        assert drain().settled == 1  # the stream drains again at once
    assert statuses([deposit])[deposit]["status"] == "completed"
    assert len(raised) == 1 and isinstance(raised[0], DBAPIError)  # the holder writes no more


def test_the_sweep_leaves_other_advisory_locks_alone() -> None:
    from shared.services.sweeper import release_stuck_stream_lock

    with stuck_lock_holder("test:not-the-stream") as raised:
        time.sleep(0.5)
        with db.transaction() as session:
            assert release_stuck_stream_lock(session, idle_seconds=0.2) is None
    assert raised == []


def test_one_batch_applies_many_wallets_each_in_its_order(wallet_factory: Any) -> None:
    lanes = [wallet_factory() for _ in range(3)]
    withdrawals: dict[Any, list[str]] = {lane: [] for lane in lanes}
    for lane in lanes:
        record("deposit", 10_000, destination=lane)
    for _ in range(10):  # interleaved across wallets, as concurrent clients submit
        for lane in lanes:
            withdrawals[lane].append(record("withdrawal", 1_500, source=lane))
    report = drain(batch_size=500)
    assert (report.settled, report.batches) == (33, 1)  # three wallets, one database transaction
    for lane in lanes:
        result = statuses(withdrawals[lane])
        assert [result[w]["status"] for w in withdrawals[lane]] == ["completed"] * 6 + [
            "failed"
        ] * 4
        assert balance_minor(lane) == 1_000
    assert_ledger_consistent()


@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_money_received_is_spent_along_a_chain_whatever_the_batches(
    wallet_factory: Any, batch_size: int
) -> None:
    """Each hop is accepted after the one before it, so it sees the money that hop brought."""
    chain = [wallet_factory() for _ in range(6)]
    record("deposit", 1_000, destination=chain[0])
    hops = [
        record("transfer", 1_000, source=source, destination=destination)
        for source, destination in zip(chain, chain[1:], strict=False)
    ]
    drain(batch_size=batch_size)
    assert {s["status"] for s in statuses(hops).values()} == {"completed"}
    assert [balance_minor(w) for w in chain] == [0, 0, 0, 0, 0, 1_000]
    assert_ledger_consistent()
