"""Scheduled transactions over HTTP, released and applied in-process by the real services.

A transaction with a future ``scheduled_at`` waits as ``scheduled`` and
reserves nothing; the release (``shared.services.scheduled.release_due``,
beat's job) makes it ``pending`` behind everything accepted before; a cancel
ends it ``canceled``. Tests move a transaction's time into the past in the
database rather than wait for it.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.services import reconciliation, scheduled
from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    drain_stream,
    statuses,
    submit,
    transfer_body,
)


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    release()
    drain_stream()
    yield


def ahead(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


def make_due(*transaction_ids: str) -> None:
    """Move the transactions' time into the past, as if it had come."""
    with db.transaction() as session:
        session.execute(
            text(
                "UPDATE transactions SET scheduled_at = now() - interval '1 second' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [uuid.UUID(t) for t in transaction_ids]},
        )


def release() -> list[uuid.UUID]:
    released: list[uuid.UUID] = []
    while True:
        with db.transaction() as session:
            batch = scheduled.release_due(session)
        released += batch
        if len(batch) < scheduled.RELEASE_BATCH_MAX:
            return released


def funded(client: Any, headers: dict[str, str], wallet_factory: Any, amount: str) -> Any:
    wallet_id = wallet_factory()
    assert submit(client, headers, deposit_body(wallet_id, amount)).status_code == 202
    drain_stream()
    return wallet_id


def bodies(a: Any, b: Any) -> dict[str, dict[str, Any]]:
    return {
        "deposit": deposit_body(a, "10.00"),
        "withdrawal": {"type": "withdrawal", "amount": "10.00", "currency": "SGD",
                       "source_wallet_id": str(a)},
        "transfer": transfer_body(a, b, "10.00"),
        "group": {"type": "group", "legs": [
            {"source_wallet_id": str(a), "destination_wallet_id": str(b), "amount": "6.00",
             "currency": "SGD"},
            {"source_wallet_id": str(a), "destination_wallet_id": str(b), "amount": "4.00",
             "currency": "SGD"}]},
    }  # fmt: skip


@pytest.mark.parametrize("type_", ["deposit", "withdrawal", "transfer", "group"])
def test_each_type_waits_scheduled_then_applies_once_released(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, type_: str
) -> None:
    a = funded(client, service_headers, wallet_factory, "50.00")
    b = wallet_factory()
    scheduled_at = ahead(hours=1)
    response = submit(
        client, service_headers, {**bodies(a, b)[type_], "scheduled_at": scheduled_at}
    )
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "scheduled" and body["type"] == type_
    assert dt.datetime.fromisoformat(body["scheduled_at"]) == dt.datetime.fromisoformat(
        scheduled_at
    )
    assert body["scheduled_at"].endswith("Z")
    drain_stream()
    assert statuses([body["id"]])[body["id"]]["status"] == "scheduled"
    assert (balance_minor(a), balance_minor(b)) == (5000, 0)  # nothing reserved or moved

    make_due(body["id"])
    assert release() == [uuid.UUID(body["id"])]
    assert statuses([body["id"]])[body["id"]]["status"] == "pending"
    drain_stream()
    answer = client.get(f"/v1/transactions/{body['id']}", headers=service_headers).get_json()
    assert answer["status"] == "completed" and answer["scheduled_at"] is not None
    expected = {"deposit": (6000, 0), "withdrawal": (4000, 0), "transfer": (4000, 1000),
                "group": (4000, 1000)}[type_]  # fmt: skip
    assert (balance_minor(a), balance_minor(b)) == expected
    assert_ledger_consistent()


def test_a_time_with_an_offset_is_recorded_as_the_same_instant(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    # The intake's statement reads every item from one JSON document: a time
    # written with its offset must come back as the instant the client meant.
    local = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).astimezone(
        dt.timezone(dt.timedelta(hours=-3, minutes=-30))
    )
    response = submit(
        client,
        service_headers,
        {**deposit_body(wallet_factory(), "1.00"), "scheduled_at": local.isoformat()},
    )
    assert response.status_code == 202, response.get_json()
    recorded = dt.datetime.fromisoformat(response.get_json()["scheduled_at"])
    assert recorded == local and recorded.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("delta", [dt.timedelta(0), dt.timedelta(days=-3)], ids=["now", "past"])
def test_a_time_not_ahead_applies_at_once(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, delta: dt.timedelta
) -> None:
    a = wallet_factory()
    at = (dt.datetime.now(dt.UTC) + delta).isoformat()
    response = submit(client, service_headers, {**deposit_body(a, "3.00"), "scheduled_at": at})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending" and body["scheduled_at"] is None
    drain_stream()
    assert balance_minor(a) == 300


def test_an_unscheduled_transaction_renders_scheduled_at_null(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    body = submit(client, service_headers, deposit_body(wallet_factory(), "1.00")).get_json()
    assert "scheduled_at" in body and body["scheduled_at"] is None


@pytest.mark.parametrize(
    "scheduled_at",
    [ahead(days=367), ahead(days=3660), "2026-12-24T09:00:00", 1893456000, "next tuesday"],
    ids=["367 days", "ten years", "no zone", "a number", "not a time"],
)
def test_scheduled_at_beyond_366_days_or_malformed_is_422_naming_it(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, scheduled_at: Any
) -> None:
    a = wallet_factory()
    response = submit(
        client, service_headers, {**deposit_body(a, "1.00"), "scheduled_at": scheduled_at}
    )
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "validation_failed"
    assert [e["field"] for e in problem["errors"]] == ["scheduled_at"]


def test_365_days_ahead_is_accepted(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=365)).astimezone(
        dt.timezone(dt.timedelta(hours=8))
    )
    body = {**deposit_body(wallet_factory(), "1.00"), "scheduled_at": at.isoformat()}
    response = submit(client, service_headers, body)
    assert response.status_code == 202 and response.get_json()["status"] == "scheduled"


def test_a_hold_cannot_be_scheduled(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    body = {"type": "hold", "amount": "1.00", "currency": "SGD",
            "source_wallet_id": str(wallet_factory()), "scheduled_at": ahead(hours=1)}  # fmt: skip
    response = submit(client, service_headers, body)
    assert response.status_code == 422
    assert "scheduled_at" in [e["field"] for e in response.get_json()["errors"]]


def test_a_released_transfer_applies_after_what_was_accepted_before_its_release(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    # Scheduled while A is empty: at acceptance it would fail insufficient_funds.
    transfer = submit(
        client, service_headers, {**transfer_body(a, b, "10.00"), "scheduled_at": ahead(hours=1)}
    ).get_json()
    deposit = submit(client, service_headers, deposit_body(a, "10.00")).get_json()
    make_due(transfer["id"])
    release()
    with db.transaction() as session:
        order = dict(
            session.execute(
                text("SELECT id::text, lane_sequence FROM transactions WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(transfer["id"]), uuid.UUID(deposit["id"])]},
            ).all()
        )
    assert order[transfer["id"]] > order[deposit["id"]]
    drain_stream()
    found = statuses([transfer["id"], deposit["id"]])
    assert {t: s["status"] for t, s in found.items()} == {
        transfer["id"]: "completed",
        deposit["id"]: "completed",
    }
    assert (balance_minor(a), balance_minor(b)) == (0, 1000)


def test_cancel_a_scheduled_one_then_cancel_again_is_409(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "20.00")
    created = submit(
        client, service_headers,
        {**transfer_body(a, wallet_factory(), "5.00"), "scheduled_at": ahead(minutes=5)},
    ).get_json()  # fmt: skip
    answer = client.post(f"/v1/transactions/{created['id']}/cancel", headers=service_headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["status"] == "canceled" and body["completed_at"] is not None
    events = client.get(
        f"/v1/events?transaction_id={created['id']}", headers=service_headers
    ).get_json()["data"]
    assert [e["type"] for e in events] == ["transaction.canceled"]
    again = client.post(f"/v1/transactions/{created['id']}/cancel", headers=service_headers)
    assert again.status_code == 409 and again.get_json()["code"] == "not_cancelable"
    make_due(created["id"])
    assert release() == []  # a canceled one is never released
    drain_stream()
    assert balance_minor(a) == 2000
    assert_ledger_consistent()


def test_cancel_of_anything_not_scheduled_is_409_not_cancelable(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    pending = submit(client, service_headers, deposit_body(a, "1.00")).get_json()
    answer = client.post(f"/v1/transactions/{pending['id']}/cancel", headers=service_headers)
    assert answer.status_code == 409 and answer.get_json()["code"] == "not_cancelable"
    drain_stream()
    answer = client.post(f"/v1/transactions/{pending['id']}/cancel", headers=service_headers)
    assert answer.status_code == 409 and answer.get_json()["code"] == "not_cancelable"
    released = submit(
        client, service_headers, {**deposit_body(a, "1.00"), "scheduled_at": ahead(hours=2)}
    ).get_json()
    make_due(released["id"])
    release()
    answer = client.post(f"/v1/transactions/{released['id']}/cancel", headers=service_headers)
    assert answer.status_code == 409 and answer.get_json()["code"] == "not_cancelable"
    unknown = client.post(f"/v1/transactions/{uuid.uuid4()}/cancel", headers=service_headers)
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "transaction_not_found"


def test_a_replay_answers_the_scheduled_transaction_as_it_is_now(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    body = {**deposit_body(wallet_factory(), "2.00"), "scheduled_at": ahead(hours=3)}
    key = str(uuid.uuid4())
    first = submit(client, service_headers, body, key=key)
    replay = submit(client, service_headers, body, key=key)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    make_due(first.get_json()["id"])
    release()
    drain_stream()
    later = submit(client, service_headers, body, key=key)
    assert later.status_code == 200 and later.get_json()["id"] == first.get_json()["id"]
    assert later.get_json()["status"] == "completed"
    other = submit(client, service_headers, {**body, "scheduled_at": ahead(hours=4)}, key=key)
    assert other.status_code == 422 and other.get_json()["code"] == "idempotency_key_reused"


def test_a_batch_item_may_be_scheduled(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    items = [
        {**deposit_body(a, "1.00"), "idempotency_key": str(uuid.uuid4())},
        {**deposit_body(a, "2.00"), "scheduled_at": ahead(days=1),
         "idempotency_key": str(uuid.uuid4())},
        {**deposit_body(a, "3.00"), "scheduled_at": ahead(days=400),
         "idempotency_key": str(uuid.uuid4())},
    ]  # fmt: skip
    results = client.post(
        "/v1/transactions/batch", json={"transactions": items}, headers=service_headers
    ).get_json()["data"]
    assert [r["status"] for r in results] == [202, 202, 422]
    assert [r["transaction"]["status"] for r in results[:2]] == ["pending", "scheduled"]


def test_list_filters_scheduled_and_canceled(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    waiting = submit(
        client, service_headers, {**deposit_body(a, "1.00"), "scheduled_at": ahead(days=2)}
    ).get_json()
    canceled = submit(
        client, service_headers, {**deposit_body(a, "1.00"), "scheduled_at": ahead(days=2)}
    ).get_json()
    client.post(f"/v1/transactions/{canceled['id']}/cancel", headers=service_headers)
    submit(client, service_headers, deposit_body(a, "1.00"))

    def listed(status: str) -> list[str]:
        answer = client.get(
            f"/v1/transactions?status={status}&wallet_id={a}", headers=service_headers
        )
        assert answer.status_code == 200, answer.get_json()
        return [t["id"] for t in answer.get_json()["data"]]

    assert listed("scheduled") == [waiting["id"]]
    assert listed("canceled") == [canceled["id"]]
    assert client.get("/v1/transactions?status=later", headers=service_headers).status_code == 422


def test_reconciliation_is_ok_with_scheduled_and_canceled_transactions_about(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "5.00")
    submit(client, service_headers, {**transfer_body(a, wallet_factory(), "4.00"),
                                      "scheduled_at": ahead(days=1)})  # fmt: skip
    gone = submit(client, service_headers, {**deposit_body(a, "9.00"),
                                            "scheduled_at": ahead(days=1)}).get_json()  # fmt: skip
    client.post(f"/v1/transactions/{gone['id']}/cancel", headers=service_headers)
    with db.transaction() as session:
        run_id = reconciliation.start_reconciliation(session)
    run = reconciliation.run_reconciliation(run_id)
    assert run.status == "ok" and not run.mismatches
    assert_ledger_consistent()


def test_two_releases_at_once_release_each_transaction_exactly_once(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    """Two beats during a lock handover, or a slow run overlapping the next: each row once."""
    a = funded(client, service_headers, wallet_factory, "100.00")
    b = wallet_factory()
    ids = [
        submit(client, service_headers,
               {**transfer_body(a, b, "1.00"), "scheduled_at": ahead(hours=1)}).get_json()["id"]
        for _ in range(30)
    ]  # fmt: skip
    make_due(*ids)
    barrier = threading.Barrier(4)
    found: list[list[uuid.UUID]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            with db.transaction() as session:
                found.append(list(scheduled.release_due(session, limit=10)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    released = [i for batch in found for i in batch]
    assert len(released) == len(set(released))  # no row released twice
    released += release()  # whatever the racing runs skipped
    assert sorted(released) == sorted(uuid.UUID(i) for i in ids)
    assert release() == []
    drain_stream()
    with db.transaction() as session:
        entries = dict(
            session.execute(
                text(
                    "SELECT transaction_id::text, count(*) FROM ledger_entries "
                    "WHERE transaction_id = ANY(:ids) GROUP BY transaction_id"
                ),
                {"ids": [uuid.UUID(i) for i in ids]},
            ).all()
        )
    assert entries == dict.fromkeys(ids, 2)  # one debit and one credit each: applied once
    assert (balance_minor(a), balance_minor(b)) == (7000, 3000)


def test_a_release_that_dies_before_its_commit_releases_nothing(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    created = submit(
        client, service_headers,
        {**deposit_body(wallet_factory(), "1.00"), "scheduled_at": ahead(hours=1)},
    ).get_json()  # fmt: skip
    make_due(created["id"])
    with pytest.raises(RuntimeError), db.transaction() as session:
        assert scheduled.release_due(session) == [uuid.UUID(created["id"])]
        raise RuntimeError("beat killed before the commit")
    assert statuses([created["id"]])[created["id"]]["status"] == "scheduled"
    assert release() == [uuid.UUID(created["id"])]
    assert release() == []
