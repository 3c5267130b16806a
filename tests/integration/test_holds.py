"""Two-phase holds over HTTP, applied in-process by the real apply path.

A hold reserves funds (``held``: available balance drops, balance does not);
a capture moves all or part of it and releases the rest; a void or an expiry
releases it. Whichever operation reaches a ``held`` hold first ends it; every
other one fails ``hold_not_open``, so a hold resolves once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.services.holds import expire_holds
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    drain_stream,
    statuses,
    submit,
)


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def hold_body(wallet: Any, amount: str, **extra: Any) -> dict[str, Any]:
    return {"type": "hold", "amount": amount, "currency": "SGD",
            "source_wallet_id": str(wallet), **extra}  # fmt: skip


def operate(
    client: Any, headers: dict[str, str], hold_id: str, verb: str, body: Any = None,
    key: str | None = None,
) -> Any:  # fmt: skip
    return client.post(
        f"/v1/transactions/{hold_id}/{verb}",
        json=body,
        headers={**headers, "Idempotency-Key": key or str(uuid.uuid4())},
    )


def wallet(client: Any, headers: dict[str, str], wallet_id: Any) -> dict[str, Any]:
    return dict(client.get(f"/v1/wallets/{wallet_id}", headers=headers).get_json())


def funded(client: Any, headers: dict[str, str], wallet_factory: Any, amount: str) -> Any:
    wallet_id = wallet_factory()
    assert submit(client, headers, deposit_body(wallet_id, amount)).status_code == 202
    drain_stream()
    return wallet_id


def held(client: Any, headers: dict[str, str], wallet_id: Any, amount: str, **extra: Any) -> str:
    response = submit(client, headers, hold_body(wallet_id, amount, **extra))
    assert response.status_code == 202, response.get_json()
    drain_stream()
    return str(response.get_json()["id"])


def test_hold_reserves_then_partial_capture_moves_part_and_releases_the_rest(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    b = wallet_factory()
    hold_id = held(client, service_headers, a, "30.00")
    hold = client.get(f"/v1/transactions/{hold_id}", headers=service_headers).get_json()
    assert hold["status"] == "held" and "expires_at" in hold
    assert {k: wallet(client, service_headers, a)[k] for k in ("balance", "available_balance",
            "held_balance")} == {"balance": "100.00", "available_balance": "70.00",
                                 "held_balance": "30.00"}  # fmt: skip

    response = operate(client, service_headers, hold_id, "capture",
                       {"amount": "10.00", "destination_wallet_id": str(b)})  # fmt: skip
    assert response.status_code == 202
    capture = response.get_json()
    assert (capture["type"], capture["status"], capture["hold_id"]) == (
        "capture",
        "pending",
        hold_id,
    )
    drain_stream()
    result = statuses([hold_id, capture["id"]])
    assert result[hold_id]["status"] == "completed"
    assert result[capture["id"]]["status"] == "completed"
    after = wallet(client, service_headers, a)
    assert (after["balance"], after["available_balance"], after["held_balance"]) == (
        "90.00", "90.00", "0.00",
    )  # fmt: skip
    assert wallet(client, service_headers, b)["balance"] == "10.00"
    assert_ledger_consistent()


def test_capture_defaults_to_the_whole_hold_into_the_system_wallet(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "50.00")
    hold_id = held(client, service_headers, a, "20.00")
    capture = operate(client, service_headers, hold_id, "capture").get_json()
    assert capture["amount"] == "20.00"
    drain_stream()
    assert wallet(client, service_headers, a)["balance"] == "30.00"
    assert_ledger_consistent()


def test_void_releases_the_hold(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "40.00")
    void = operate(client, service_headers, hold_id, "void")
    assert void.status_code == 202 and void.get_json()["type"] == "void"
    drain_stream()
    assert statuses([hold_id])[hold_id]["status"] == "voided"
    after = wallet(client, service_headers, a)
    assert (after["balance"], after["available_balance"], after["held_balance"]) == (
        "100.00", "100.00", "0.00",
    )  # fmt: skip


def test_capture_after_void_and_void_after_capture_are_hold_not_open(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    voided = held(client, service_headers, a, "10.00")
    operate(client, service_headers, voided, "void")
    drain_stream()
    response = operate(client, service_headers, voided, "capture")
    assert (response.status_code, response.get_json()["code"]) == (409, "hold_not_open")
    captured = held(client, service_headers, a, "10.00")
    operate(client, service_headers, captured, "capture")
    drain_stream()
    response = operate(client, service_headers, captured, "void")
    assert (response.status_code, response.get_json()["code"]) == (409, "hold_not_open")


def test_operations_queued_together_resolve_the_hold_once(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "25.00")
    ops = [operate(client, service_headers, hold_id, verb).get_json()["id"]
           for verb in ("capture", "void", "capture", "void")]  # fmt: skip
    drain_stream()
    result = statuses(ops)
    assert [result[o]["status"] for o in ops] == ["completed", "failed", "failed", "failed"]
    assert {result[o]["failure_code"] for o in ops[1:]} == {"hold_not_open"}
    assert statuses([hold_id])[hold_id]["status"] == "completed"
    assert wallet(client, service_headers, a)["balance"] == "75.00"
    assert_ledger_consistent()


def test_capture_above_the_held_amount_is_refused(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "10.00")
    response = operate(client, service_headers, hold_id, "capture", {"amount": "10.01"})
    assert (response.status_code, response.get_json()["code"]) == (422, "capture_exceeds_hold")
    response = operate(client, service_headers, hold_id, "capture", {"amount": "1.005"})
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "amount"


def test_a_failed_hold_is_never_capturable_and_two_holds_cannot_exceed_the_balance(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    first = held(client, service_headers, a, "60.00")
    second = held(client, service_headers, a, "60.00")
    result = statuses([first, second])
    assert result[first]["status"] == "held"
    assert (result[second]["status"], result[second]["failure_code"]) == (
        "failed", "insufficient_funds",
    )  # fmt: skip
    response = operate(client, service_headers, second, "capture")
    assert (response.status_code, response.get_json()["code"]) == (409, "hold_not_open")


def test_a_withdrawal_cannot_spend_held_funds(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    held(client, service_headers, a, "80.00")
    body = {"type": "withdrawal", "amount": "30.00", "currency": "SGD",
            "source_wallet_id": str(a)}  # fmt: skip
    withdrawal = submit(client, service_headers, body).get_json()["id"]
    drain_stream()
    assert statuses([withdrawal])[withdrawal]["failure_code"] == "insufficient_funds"


def test_expiry_job_expires_and_releases_a_held_hold_once(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "15.00", expires_in=60)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    for _ in range(2):  # twice: the second run queues nothing more
        with db.transaction() as session:
            expire_holds(session, now=later)
    with db.transaction() as session:
        expiries = session.execute(
            text("SELECT id FROM transactions WHERE hold_id = :h AND type = 'expiry'"),
            {"h": hold_id},
        ).all()
    assert len(expiries) == 1
    drain_stream()
    assert statuses([hold_id])[hold_id]["status"] == "expired"
    assert wallet(client, service_headers, a)["held_balance"] == "0.00"


def test_an_expiry_racing_a_queued_capture_resolves_the_hold_once(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "15.00", expires_in=60)
    capture = operate(client, service_headers, hold_id, "capture").get_json()["id"]
    with db.transaction() as session:  # the hold is still held: its capture is only queued
        expire_holds(session, now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    drain_stream()
    with db.transaction() as session:
        expiry = session.execute(
            text("SELECT id FROM transactions WHERE hold_id = :h AND type = 'expiry'"),
            {"h": hold_id},
        ).scalar_one()
    result = statuses([hold_id, capture, str(expiry)])
    assert result[hold_id]["status"] == "completed" and result[capture]["status"] == "completed"
    assert result[str(expiry)]["failure_code"] == "hold_not_open"
    assert wallet(client, service_headers, a)["balance"] == "85.00"
    assert_ledger_consistent()


def test_frozen_wallet_hold_can_be_voided_not_captured(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any,
) -> None:  # fmt: skip
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "10.00")
    client.patch(f"/v1/wallets/{a}", json={"status": "frozen"}, headers=ops_headers)
    frozen_hold = submit(client, service_headers, hold_body(a, "1.00")).get_json()["id"]
    capture = operate(client, service_headers, hold_id, "capture").get_json()["id"]
    void = operate(client, service_headers, hold_id, "void").get_json()["id"]
    drain_stream()
    result = statuses([frozen_hold, capture, void, hold_id])
    assert result[frozen_hold]["failure_code"] == "wallet_frozen"
    assert result[capture]["failure_code"] == "wallet_frozen"
    assert result[void]["status"] == "completed" and result[hold_id]["status"] == "voided"
    client.patch(f"/v1/wallets/{a}", json={"status": "active"}, headers=ops_headers)


def test_capture_honours_its_idempotency_key(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    hold_id = held(client, service_headers, a, "10.00")
    first = operate(client, service_headers, hold_id, "capture", {"amount": "5.00"}, key="cap-1")
    again = operate(client, service_headers, hold_id, "capture", {"amount": "5.00"}, key="cap-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    other = operate(client, service_headers, hold_id, "capture", {"amount": "6.00"}, key="cap-1")
    assert (other.status_code, other.get_json()["code"]) == (422, "idempotency_key_reused")
    drain_stream()  # and after the hold ended, the same request still replays
    assert operate(client, service_headers, hold_id, "capture", {"amount": "5.00"},
                   key="cap-1").status_code == 200  # fmt: skip


def test_capture_of_something_that_is_not_a_hold_is_hold_not_open(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    deposit = submit(client, service_headers, deposit_body(a, "1.00")).get_json()["id"]
    response = operate(client, service_headers, deposit, "capture")
    assert (response.status_code, response.get_json()["code"]) == (409, "hold_not_open")
    response = operate(client, service_headers, str(uuid.uuid4()), "void")
    assert (response.status_code, response.get_json()["code"]) == (404, "transaction_not_found")
