"""The events outbox, written by the real apply path in-process: one event per status change.

Every status change the contract names appends its event in the commit that
makes it, with one delivery per enabled endpoint subscribed to its type; a
service key lists the events of its own transactions, an ops key all of them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.config import get_settings
from tests.helpers import deposit_body, drain_stream, submit


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def events_of(client: Any, headers: dict[str, str], transaction_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/events?transaction_id={transaction_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(response.get_json()["data"])


def accepted(client: Any, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = submit(client, headers, body)
    assert response.status_code == 202, response.get_data(as_text=True)
    return str(response.get_json()["id"])


def funded_hold(client: Any, headers: dict[str, str], wallet: Any) -> str:
    """Submit a 30.00 SGD deposit into ``wallet`` and a 20.00 hold on it; return the hold's id."""
    accepted(client, headers, deposit_body(wallet, "30.00"))
    return accepted(client, headers, {"type": "hold", "amount": "20.00", "currency": "SGD",
                                      "source_wallet_id": str(wallet)})  # fmt: skip


def test_completed_and_failed_transactions_each_have_one_event(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    deposit = accepted(client, service_headers, deposit_body(wallet, "10.00"))
    withdrawal = accepted(client, service_headers, {
        "type": "withdrawal", "amount": "50.00", "currency": "SGD",
        "source_wallet_id": str(wallet)})  # fmt: skip
    drain_stream()
    [completed] = events_of(client, service_headers, deposit)
    assert completed["id"].startswith("evt_") and completed["type"] == "transaction.completed"
    assert completed["data"]["id"] == deposit and completed["data"]["status"] == "completed"
    assert completed["data"]["amount"] == "10.00"
    [failed] = events_of(client, service_headers, withdrawal)
    assert failed["type"] == "transaction.failed"
    assert failed["data"]["failure_code"] == "insufficient_funds"


def test_a_hold_and_its_capture_each_have_their_events(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    hold = funded_hold(client, service_headers, wallet_factory())
    drain_stream()
    assert [e["type"] for e in events_of(client, service_headers, hold)] == ["transaction.held"]
    response = client.post(
        f"/v1/transactions/{hold}/capture",
        json={"amount": "5.00"},
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    capture = response.get_json()["id"]
    drain_stream()
    hold_events = events_of(client, service_headers, hold)
    assert [e["type"] for e in hold_events] == ["transaction.completed", "transaction.held"]
    assert hold_events[1]["data"]["status"] == "held"  # as it was then
    assert [e["type"] for e in events_of(client, service_headers, capture)] == [
        "transaction.completed"
    ]


def test_retries_exhausted_has_its_failed_event(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    poison = accepted(client, service_headers, deposit_body(wallet, "1.00"))
    with db.transaction() as session:
        session.execute(
            text("UPDATE transactions SET attempts = :n WHERE id = :id"),
            {"n": get_settings().apply_attempts_max, "id": poison},
        )
    drain_stream()
    [failed] = events_of(client, service_headers, poison)
    assert failed["type"] == "transaction.failed"
    assert failed["data"]["failure_code"] == "retries_exhausted"


def test_a_service_key_sees_only_its_own_events(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        _, other_secret = create_api_key(session, role=Role.SERVICE, name="other service")
    other = {"Authorization": f"Bearer {other_secret}"}
    deposit = accepted(client, service_headers, deposit_body(wallet_factory(), "1.00"))
    drain_stream()
    assert events_of(client, other, deposit) == []
    assert len(events_of(client, ops_headers, deposit)) == 1
    page = client.get("/v1/events?type=transaction.completed&limit=1", headers=other).get_json()
    assert page["data"] == [] and page["next_cursor"] is None


def test_events_page_newest_first_with_a_cursor(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    ids = [accepted(client, service_headers, deposit_body(wallet, "1.00")) for _ in range(3)]
    drain_stream()
    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/events?type=transaction.completed&limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = client.get(query, headers=service_headers).get_json()
        seen += [e["data"]["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None or set(ids) <= set(seen):
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))


def test_events_get_deliveries_for_enabled_subscribed_endpoints_only(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    def register(**body: Any) -> str:
        response = client.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x", **body},
            headers=ops_headers,
        )  # fmt: skip
        assert response.status_code == 201, response.get_data(as_text=True)
        return str(response.get_json()["id"])

    everything = register()
    failures = register(events=["transaction.failed"])
    disabled = register()
    client.patch(f"/v1/webhook-endpoints/{disabled}", json={"status": "disabled"},
                 headers=ops_headers)  # fmt: skip
    try:
        deposit = accepted(client, service_headers, deposit_body(wallet_factory(), "1.00"))
        drain_stream()
        [event] = events_of(client, service_headers, deposit)
        for endpoint, expected in ((everything, 1), (failures, 0), (disabled, 0)):
            page = client.get(f"/v1/webhook-endpoints/{endpoint}/deliveries",
                              headers=ops_headers).get_json()  # fmt: skip
            mine = [d for d in page["data"] if d["event_id"] == event["id"]]
            assert len(mine) == expected, (endpoint, page)
        [delivery] = [
            d
            for d in client.get(
                f"/v1/webhook-endpoints/{everything}/deliveries", headers=ops_headers
            ).get_json()["data"]  # fmt: skip
            if d["event_id"] == event["id"]
        ]
        assert delivery["status"] == "pending" and delivery["event_type"] == "transaction.completed"
    finally:
        for endpoint in (everything, failures, disabled):
            client.delete(f"/v1/webhook-endpoints/{endpoint}", headers=ops_headers)


def test_a_reconciliation_mismatch_has_its_event(
    client: Any, ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    from shared.services.reconciliation import run_reconciliation, start_reconciliation

    wallet = wallet_factory()
    with db.transaction() as session:
        session.execute(text("UPDATE wallets SET balance_minor = balance_minor + 1 WHERE id = :id"),
                        {"id": wallet})  # fmt: skip
        run_id = start_reconciliation(session)
    try:
        assert run_reconciliation(run_id).status == "mismatch"
        page = client.get("/v1/events?type=reconciliation.mismatch", headers=ops_headers).get_json()
        [event] = [e for e in page["data"] if e["data"]["id"] == str(run_id)]
        assert event["data"]["status"] == "mismatch"
    finally:
        with db.transaction() as session:
            session.execute(
                text("UPDATE wallets SET balance_minor = balance_minor - 1 WHERE id = :id"),
                {"id": wallet},
            )


def test_a_hold_captured_in_its_own_batch_still_reports_held_first(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    hold = funded_hold(client, service_headers, wallet_factory())
    client.post(
        f"/v1/transactions/{hold}/capture",
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    drain_stream()  # the deposit, the hold and its capture in one batch
    events = events_of(client, service_headers, hold)
    assert [e["type"] for e in events] == ["transaction.completed", "transaction.held"]
    assert [e["data"]["status"] for e in events] == ["completed", "held"]
    with db.transaction() as session:  # one batch indeed: held is dated just before its end
        gap = session.scalar(
            text("SELECT max(created_at) - min(created_at) FROM events WHERE transaction_id = :id"),
            {"id": uuid.UUID(hold)},
        )
    assert gap == dt.timedelta(microseconds=1)


def test_prune_deletes_old_events_and_their_ended_deliveries_but_waits_for_pending_ones(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    from shared.services.events import prune_events
    from worker import maintenance_tasks

    response = client.post("/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/x"},
                           headers=ops_headers)  # fmt: skip
    endpoint = response.get_json()["id"]
    try:
        wallet = wallet_factory()
        ids = [accepted(client, service_headers, deposit_body(wallet, "1.00")) for _ in range(5)]
        drain_stream()
        events = {t: events_of(client, service_headers, t)[0]["id"][4:] for t in ids}
        old, ended, pending, recent = ids[:2], ids[2], ids[3], ids[4]
        with db.transaction() as session:
            # Four events 31 days old: two without deliveries left pending, one whose
            # delivery has ended, one whose delivery is still pending.
            backdate = [uuid.UUID(events[t]) for t in (*old, ended, pending)]
            session.execute(
                text("UPDATE events SET created_at = now() - interval '31 days' "
                     "WHERE id = ANY(:ids)"), {"ids": backdate})  # fmt: skip
            session.execute(
                text("UPDATE webhook_deliveries SET status = CASE WHEN event_id = :pending "
                     "THEN 'pending' ELSE 'succeeded' END WHERE event_id = ANY(:ids)"),
                {"ids": backdate, "pending": uuid.UUID(events[pending])},
            )  # fmt: skip

        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        assert prune_events(cutoff=cutoff, chunk_size=2) == 3  # chunks of 2: 2 + 1
        assert maintenance_tasks.prune_events() == 0  # the beat task, again: nothing left

        for transaction_id in (*old, ended):
            assert events_of(client, service_headers, transaction_id) == []
        for transaction_id in (pending, recent):
            assert len(events_of(client, service_headers, transaction_id)) == 1
        with db.transaction() as session:
            left = session.scalars(
                text("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = :e"),
                {"e": uuid.UUID(endpoint)},
            ).all()
        assert {str(e).replace("-", "") for e in left} == {events[pending], events[recent]}
    finally:
        client.delete(f"/v1/webhook-endpoints/{endpoint}", headers=ops_headers)


def test_event_ids_are_time_ordered_so_their_inserts_append_to_the_index(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    # UUIDv7 (RFC 9562, PostgreSQL 18's uuidv7()): version 7, and later events sort after.
    wallet = wallet_factory()
    ids = []
    for _ in range(3):
        ids.append(accepted(client, service_headers, deposit_body(wallet, "1.00")))
        drain_stream()
    event_ids = [uuid.UUID(events_of(client, service_headers, t)[0]["id"][4:]) for t in ids]
    assert {e.version for e in event_ids} == {7}
    assert event_ids == sorted(event_ids)
