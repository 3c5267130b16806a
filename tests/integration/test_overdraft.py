"""Overdraft limits over HTTP, applied in-process by the real apply path.

``PATCH /v1/wallets/{id}`` (ops) ``{"overdraft_limit": "50.00"}`` lets debits
and holds take the wallet's available balance down to -50.00 and no further
(``insufficient_funds``); a limit below what the wallet already uses is
``409 overdraft_in_use``. The database's check constraints back the rule, and
a change of the limit is serialised with applies by the wallet's row lock.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared import db
from shared.services.apply import apply_batch
from shared.services.processor import claim_batch
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    drain_stream,
    statuses,
    submit,
    transfer_body,
    wait_for,
)


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def patch(client: Any, headers: dict[str, str], wallet_id: Any, body: dict[str, Any]) -> Any:
    return client.patch(f"/v1/wallets/{wallet_id}", json=body, headers=headers)


def wallet(client: Any, headers: dict[str, str], wallet_id: Any) -> dict[str, Any]:
    return dict(client.get(f"/v1/wallets/{wallet_id}", headers=headers).get_json())


def withdrawal_body(wallet_id: Any, amount: str) -> dict[str, Any]:
    return {"type": "withdrawal", "amount": amount, "currency": "SGD",
            "source_wallet_id": str(wallet_id)}  # fmt: skip


def applied(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """Submit ``body``, apply the stream, return the transaction's status row."""
    response = submit(client, headers, body)
    assert response.status_code == 202, response.get_json()
    drain_stream()
    transaction_id = response.get_json()["id"]
    return statuses([transaction_id])[transaction_id]


def test_new_wallet_has_no_overdraft(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    body = wallet(client, service_headers, wallet_factory())
    assert body["overdraft_limit"] == "0.00"
    assert wallet(client, service_headers, wallet_factory("JPY"))["overdraft_limit"] == "0"


def test_debits_use_the_limit_and_fail_beyond_it(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    applied(client, service_headers, deposit_body(a, "20.00"))
    response = patch(client, ops_headers, a, {"overdraft_limit": "50.00"})
    assert response.status_code == 200
    assert response.get_json()["overdraft_limit"] == "50.00"

    assert applied(client, service_headers, transfer_body(a, b, "60.00"))["status"] == "completed"
    body = wallet(client, service_headers, a)
    assert (body["balance"], body["available_balance"]) == ("-40.00", "-40.00")
    beyond = applied(client, service_headers, withdrawal_body(a, "10.01"))
    assert (beyond["status"], beyond["failure_code"]) == ("failed", "insufficient_funds")
    assert applied(client, service_headers, withdrawal_body(a, "10.00"))["status"] == "completed"
    assert wallet(client, service_headers, a)["available_balance"] == "-50.00"
    assert_ledger_consistent()


def test_holds_and_captures_count_against_the_limit(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    assert patch(client, ops_headers, a, {"overdraft_limit": "30.00"}).status_code == 200
    hold = {"type": "hold", "amount": "25.00", "currency": "SGD", "source_wallet_id": str(a)}
    response = submit(client, service_headers, hold)
    drain_stream()
    hold_id = response.get_json()["id"]
    assert statuses([hold_id])[hold_id]["status"] == "held"
    body = wallet(client, service_headers, a)
    assert (body["balance"], body["available_balance"], body["held_balance"]) == (
        "0.00", "-25.00", "25.00",
    )  # fmt: skip
    # The hold uses 25.00 of the 30.00: a debit of 5.01 passes the limit, one of 5.00 does not.
    assert applied(client, service_headers, transfer_body(a, b, "5.01"))["failure_code"] == (
        "insufficient_funds"
    )
    assert applied(client, service_headers, transfer_body(a, b, "5.00"))["status"] == "completed"
    capture = client.post(
        f"/v1/transactions/{hold_id}/capture",
        json={"destination_wallet_id": str(b)},
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert capture.status_code == 202
    drain_stream()
    body = wallet(client, service_headers, a)
    assert (body["balance"], body["available_balance"], body["held_balance"]) == (
        "-30.00", "-30.00", "0.00",
    )  # fmt: skip
    assert_ledger_consistent()


def test_limit_below_what_the_wallet_uses_is_409(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    assert patch(client, ops_headers, a, {"overdraft_limit": "50.00"}).status_code == 200
    applied(client, service_headers, withdrawal_body(a, "30.00"))
    response = patch(client, ops_headers, a, {"overdraft_limit": "29.99"})
    assert response.status_code == 409
    problem = response.get_json()
    assert problem["code"] == "overdraft_in_use" and "30.00" in problem["detail"]
    assert response.content_type == "application/problem+json"
    assert wallet(client, service_headers, a)["overdraft_limit"] == "50.00"
    # Exactly what it uses is allowed; then nothing more can be spent.
    assert patch(client, ops_headers, a, {"overdraft_limit": "30"}).status_code == 200
    assert applied(client, service_headers, withdrawal_body(a, "0.01"))["failure_code"] == (
        "insufficient_funds"
    )
    # Paying the overdraft back frees the limit to go to zero.
    applied(client, service_headers, deposit_body(a, "30.00"))
    assert (
        patch(client, ops_headers, a, {"overdraft_limit": "0"}).get_json()["overdraft_limit"]
        == "0.00"
    )


def test_patch_sets_status_and_limit_together_and_audits_the_limit(
    client: Any, ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    body = patch(
        client, ops_headers, a, {"status": "frozen", "overdraft_limit": "12.50"}
    ).get_json()
    assert (body["status"], body["overdraft_limit"]) == ("frozen", "12.50")
    events = client.get(
        "/v1/audit-events", query_string={"target_id": str(a)}, headers=ops_headers
    ).get_json()["data"]
    by_action = {e["action"]: e for e in events}  # one transaction: one created_at, any order
    assert by_action.keys() == {"wallet.overdraft_limit", "wallet.freeze"}
    assert by_action["wallet.overdraft_limit"]["details"] == {
        "overdraft_limit_minor": 1250, "previous_minor": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"overdraft_limit": "-5.00"}, "overdraft_limit"),
        ({"overdraft_limit": "5.001"}, "overdraft_limit"),
        ({"overdraft_limit": 5}, "overdraft_limit"),
        ({}, "body"),
        ({"overdraft_limit": "1", "extra": 1}, "extra"),
    ],
)
def test_patch_rejects_bad_limits(
    client: Any, ops_headers: dict[str, str], wallet_factory: Any, body: dict[str, Any], field: str
) -> None:
    response = patch(client, ops_headers, wallet_factory(), body)
    assert response.status_code == 422, response.get_json()
    assert field in [e["field"] for e in response.get_json()["errors"]]


def test_limit_is_ops_only_and_not_for_system_wallets(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = wallet_factory()
    assert patch(client, service_headers, a, {"overdraft_limit": "1.00"}).status_code == 403
    with db.transaction() as session:
        system = session.execute(
            text("SELECT id FROM wallets WHERE is_system AND currency = 'SGD'")
        ).scalar_one()
    response = patch(client, ops_headers, system, {"overdraft_limit": "1.00"})
    assert (response.status_code, response.get_json()["code"]) == (409, "system_wallet_immutable")
    response = patch(client, ops_headers, uuid.uuid4(), {"overdraft_limit": "1.00"})
    assert (response.status_code, response.get_json()["code"]) == (404, "wallet_not_found")


def test_database_refuses_a_balance_below_the_limit(wallet_factory: Any) -> None:
    a = wallet_factory()
    with db.transaction() as session:
        session.execute(
            text("UPDATE wallets SET overdraft_limit_minor = 500 WHERE id = :id"), {"id": a}
        )
    with db.transaction() as session:  # down to the limit, holds counted: allowed
        session.execute(
            text("UPDATE wallets SET balance_minor = -300, held_minor = 200 WHERE id = :id"),
            {"id": a},
        )
    for change in ("held_minor = 201", "balance_minor = -501, held_minor = 0",
                   "overdraft_limit_minor = 499", "overdraft_limit_minor = -1"):  # fmt: skip
        with pytest.raises(IntegrityError), db.transaction() as session:
            session.execute(text(f"UPDATE wallets SET {change} WHERE id = :id"), {"id": a})
    with db.transaction() as session:
        session.execute(
            text("UPDATE wallets SET balance_minor = 0, held_minor = 0 WHERE id = :id"), {"id": a}
        )


def _blocked_on_a_lock() -> bool:
    """Tell whether another session of the test database waits for a row lock."""
    with db.transaction() as session:
        return bool(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def test_lowering_the_limit_waits_for_an_apply_and_sees_its_debits(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    """An apply holding the wallet's lock commits a debit into the overdraft; the PATCH
    lowering the limit waits for it and then refuses (``overdraft_in_use``)."""
    a = wallet_factory()
    assert patch(client, ops_headers, a, {"overdraft_limit": "50.00"}).status_code == 200
    submit(client, service_headers, withdrawal_body(a, "40.00"))
    with db.transaction() as session:
        claimed = claim_batch(session, batch_size=10, attempts_max=3)
    assert claimed is not None
    answers: list[Any] = []
    with db.transaction() as session:
        apply_batch(session, claimed.ids)  # holds the wallet's row lock until the commit
        thread = threading.Thread(
            target=lambda: answers.append(patch(client, ops_headers, a, {"overdraft_limit": "10"}))
        )
        thread.start()
        wait_for(_blocked_on_a_lock, timeout_seconds=60, what="the PATCH waiting for the wallet")
    thread.join(60)
    assert answers and answers[0].status_code == 409
    assert answers[0].get_json()["code"] == "overdraft_in_use"
    assert wallet(client, service_headers, a)["available_balance"] == "-40.00"
    assert_ledger_consistent()


def test_an_apply_waits_for_a_lowered_limit_and_posts_against_it(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    """A PATCH lowering the limit holds the wallet's lock; the apply waits for its commit
    and then fails the debit that only the old limit allowed."""
    from shared.services.wallets import set_overdraft_limit

    a = wallet_factory()
    assert patch(client, ops_headers, a, {"overdraft_limit": "50.00"}).status_code == 200
    withdrawal = submit(client, service_headers, withdrawal_body(a, "40.00")).get_json()["id"]
    drained: list[Any] = []
    with db.transaction() as session:
        set_overdraft_limit(session, a, "10.00")  # locks the wallet until the commit
        thread = threading.Thread(target=lambda: drained.append(drain_stream()))
        thread.start()
        wait_for(_blocked_on_a_lock, timeout_seconds=60, what="the apply waiting for the wallet")
    thread.join(60)
    assert drained and drained[0].settled == 1
    assert statuses([withdrawal])[withdrawal]["failure_code"] == "insufficient_funds"
    body = wallet(client, service_headers, a)
    assert (body["available_balance"], body["overdraft_limit"]) == ("0.00", "10.00")
    assert_ledger_consistent()
