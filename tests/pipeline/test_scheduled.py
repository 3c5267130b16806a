"""Scheduled transactions with a real Celery worker and a real beat (docs/api.md, "Scheduled transactions").

Beat's release job makes a due ``scheduled`` transaction ``pending`` behind
everything accepted before its release, and a release that beat loses or
runs more than once (beat killed, the job sent again while one runs) still
releases, and so applies, each transaction exactly once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

import broker
from shared import db
from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    submit,
    transfer_body,
    wait_for,
    wait_terminal,
)
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

RELEASE_JOB = "release-scheduled-transactions"
BEAT_ENV = {"TALLY_SCHEDULE_INTERVAL_SECONDS": "1"}


@pytest.fixture
def fast_beat() -> Iterator[CeleryProcess]:
    """A real beat that runs the release job every second."""
    process = CeleryProcess("beat", "beat-scheduled", env=BEAT_ENV).start()
    yield process
    process.stop()


def ahead(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def make_due(transaction_ids: list[str]) -> None:
    """Move the transactions' time into the past, as if it had come."""
    with db.transaction() as session:
        session.execute(
            text("UPDATE transactions SET scheduled_at = now() WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(t) for t in transaction_ids]},
        )


def row(transaction_id: str) -> Any:
    with db.transaction() as session:
        return session.execute(
            text(
                "SELECT status, scheduled_at, updated_at, lane_sequence FROM transactions "
                "WHERE id = :id"
            ),
            {"id": uuid.UUID(transaction_id)},
        ).one()


def entries_per_transaction(transaction_ids: list[str]) -> dict[str, int]:
    with db.transaction() as session:
        return dict(
            session.execute(
                text(
                    "SELECT transaction_id::text, count(*) FROM ledger_entries "
                    "WHERE transaction_id = ANY(:ids) GROUP BY transaction_id"
                ),
                {"ids": [uuid.UUID(t) for t in transaction_ids]},
            ).all()
        )


def test_beat_releases_a_scheduled_transfer_after_its_time_behind_what_was_accepted_before(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: CeleryProcess,
    fast_beat: CeleryProcess,
) -> None:
    a, b = wallet_factory(), wallet_factory()
    # Scheduled while A is empty: it can only complete if it applies after the deposit.
    transfer = submit(
        client, service_headers, {**transfer_body(a, b, "10.00"), "scheduled_at": ahead(hours=1)}
    ).get_json()
    assert transfer["status"] == "scheduled"
    deposit = submit(client, service_headers, deposit_body(a, "10.00")).get_json()
    wait_terminal([deposit["id"]], context=worker.log())
    assert row(transfer["id"]).status == "scheduled"  # an hour ahead: beat leaves it

    make_due([transfer["id"]])
    # A second one whose time comes by the clock, a couple of seconds from now.
    soon = submit(
        client, service_headers, {**deposit_body(b, "1.00"), "scheduled_at": ahead(seconds=2)}
    ).get_json()
    assert soon["status"] == "scheduled"
    found = wait_terminal([transfer["id"], soon["id"]], context=fast_beat.log() + worker.log())
    assert {t: s["status"] for t, s in found.items()} == {
        transfer["id"]: "completed",
        soon["id"]: "completed",
    }
    released = row(soon["id"])
    assert released.updated_at >= released.scheduled_at  # released after its time, not before
    assert row(transfer["id"]).lane_sequence > row(deposit["id"]).lane_sequence
    assert (balance_minor(a), balance_minor(b)) == (0, 1100)
    assert f"Sending due task {RELEASE_JOB} " in fast_beat.log_path.read_text(errors="replace")
    assert_ledger_consistent()


def test_releases_lost_or_doubled_release_and_apply_each_transaction_once(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: CeleryProcess,
    redis_client: Any,
) -> None:
    """Beat killed, Redis emptied, the job sent again and again while others run, a new beat."""
    a = wallet_factory()
    b = wallet_factory()
    submit(client, service_headers, deposit_body(a, "100.00"))
    ids = [
        submit(
            client, service_headers, {**transfer_body(a, b, "1.00"), "scheduled_at": ahead(hours=1)}
        ).get_json()["id"]
        for _ in range(40)
    ]
    first = CeleryProcess("beat", "beat-killed", env=BEAT_ENV).start()
    try:
        make_due(ids)
        wait_for(
            lambda: (
                f"Sending due task {RELEASE_JOB} " in first.log_path.read_text(errors="replace")
            ),
            timeout_seconds=120,
            what="the first beat sending the release job",
            log=first.log,
        )
        first.kill()  # wherever its release was: sent, running, or committed
        redis_client.flushdb()  # and whatever it sent and was still queued is lost
        for _ in range(6):  # the job sent again while others run: the worker runs two at once
            broker.send(broker.RELEASE_SCHEDULED_TASK)
        # The killed beat's lock must lapse (TALLY_BEAT_LOCK_TIMEOUT_SECONDS) before the next schedules.
        second = CeleryProcess("beat", "beat-next", env=BEAT_ENV).start()
        try:
            found = wait_terminal(ids, timeout_seconds=120, context=worker.log())
        finally:
            second.stop()
    finally:
        first.kill()
    assert {s["status"] for s in found.values()} == {"completed"}
    assert entries_per_transaction(ids) == dict.fromkeys(ids, 2)  # one debit, one credit: once
    assert (balance_minor(a), balance_minor(b)) == (6000, 4000)
    assert_ledger_consistent()


def test_a_canceled_transaction_is_never_released(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    worker: CeleryProcess,
    fast_beat: CeleryProcess,
) -> None:
    a = wallet_factory()
    canceled = submit(
        client, service_headers, {**deposit_body(a, "5.00"), "scheduled_at": ahead(hours=1)}
    ).get_json()
    assert client.post(
        f"/v1/transactions/{canceled['id']}/cancel", headers=service_headers
    ).status_code == 200  # fmt: skip
    make_due([canceled["id"]])
    # A later one, due too: once it is applied, beat has run past the canceled one.
    marker = submit(
        client, service_headers, {**deposit_body(a, "1.00"), "scheduled_at": ahead(hours=1)}
    ).get_json()
    make_due([marker["id"]])
    wait_terminal([marker["id"]], context=fast_beat.log() + worker.log())
    assert row(canceled["id"]).status == "canceled"
    assert balance_minor(a) == 100
