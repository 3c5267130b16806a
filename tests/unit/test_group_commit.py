"""The group committer: concurrent submissions share one record call, each gets its own outcome."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from shared.ledger.errors import NotFound
from shared.ledger.states import TransactionType
from shared.services.group_commit import GroupCommitter
from shared.services.intake import BatchItem, Outcome, Recorded, TransactionRequest


def item(amount_minor: int) -> BatchItem:
    request = TransactionRequest(TransactionType.DEPOSIT, amount_minor, "SGD", None, uuid.uuid4())
    return BatchItem(request, str(uuid.uuid4()), uuid.uuid4())


class SlowRecorder:
    """Records by answering each item with its amount; takes ``seconds`` per group, like a commit."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.groups: list[list[int]] = []
        self.keys: list[list[tuple[uuid.UUID, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[BatchItem]) -> list[Outcome]:
        with self.lock:
            self.groups.append([i.request.amount_minor for i in items])
            self.keys.append([(i.api_key_id, i.idempotency_key) for i in items])
        time.sleep(self.seconds)
        if self.fail:
            raise ConnectionError("the database is unreachable")
        return [
            NotFound("odd", code="wallet_not_found")
            if i.request.amount_minor % 2
            else Recorded(i.request.amount_minor, False)  # type: ignore[arg-type]
            for i in items
        ]


def run_concurrently(committer: GroupCommitter, amounts: list[int]) -> dict[int, Any]:
    """Submit one item per amount from as many threads at once; return each one's outcome."""
    barrier = threading.Barrier(len(amounts))
    answers: dict[int, Any] = {}

    def one(amount: int) -> None:
        barrier.wait()
        try:
            answers[amount] = committer.submit(item(amount))
        except Exception as error:
            answers[amount] = error

    threads = [threading.Thread(target=one, args=(a,)) for a in amounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return answers


def test_a_submission_alone_is_recorded_at_once() -> None:
    recorder = SlowRecorder()
    committer = GroupCommitter(recorder, gather_seconds=0.5)
    started = time.monotonic()
    for amount in (2, 4, 6):
        outcome = committer.submit(item(amount))
        assert isinstance(outcome, Recorded) and outcome.transaction == amount
    assert time.monotonic() - started < 0.3  # never waited the gather time
    assert recorder.groups == [[2], [4], [6]]


def test_concurrent_submissions_share_groups_and_get_their_own_outcomes() -> None:
    recorder = SlowRecorder(seconds=0.02)
    committer = GroupCommitter(recorder, gather_seconds=0.002)
    amounts = list(range(1, 41))
    answers = run_concurrently(committer, amounts)
    assert sorted(answers) == amounts
    for amount, outcome in answers.items():
        if amount % 2:
            assert isinstance(outcome, NotFound)
        else:
            assert isinstance(outcome, Recorded) and outcome.transaction == amount
    assert sorted(a for group in recorder.groups for a in group) == amounts  # each once
    assert len(recorder.groups) < len(amounts)  # they shared
    assert max(len(group) for group in recorder.groups) > 1
    assert all(keys == sorted(keys) for keys in recorder.keys)  # in key order: no deadlock


def test_a_failed_group_fails_each_of_its_submissions_and_the_next_group_goes_on() -> None:
    recorder = SlowRecorder(seconds=0.01, fail=True)
    committer = GroupCommitter(recorder, gather_seconds=0.001)
    answers = run_concurrently(committer, [2, 4, 6, 8])
    assert all(isinstance(outcome, ConnectionError) for outcome in answers.values())
    recorder.fail = False
    outcome = committer.submit(item(10))
    assert isinstance(outcome, Recorded) and outcome.transaction == 10


def test_groups_hold_at_most_group_items_max() -> None:
    recorder = SlowRecorder(seconds=0.01)
    committer = GroupCommitter(recorder, gather_seconds=0.001, group_items_max=3)
    answers = run_concurrently(committer, [2 * n for n in range(1, 13)])
    assert len(answers) == 12
    assert max(len(group) for group in recorder.groups) <= 3


@pytest.mark.parametrize("gather_seconds", [0.0, 0.001])
def test_the_gather_wait_is_bounded(gather_seconds: float) -> None:
    recorder = SlowRecorder(seconds=0.005)
    committer = GroupCommitter(recorder, gather_seconds=gather_seconds)
    run_concurrently(committer, [2, 4, 6, 8])  # the last group had several
    started = time.monotonic()
    committer.submit(item(12))  # alone now: waits at most gather_seconds for others
    assert time.monotonic() - started < 0.005 + gather_seconds + 0.2
