"""Groups over HTTP, applied in-process: all legs or none, in every debited wallet's order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    drain_stream,
    statuses,
    submit,
)


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def leg(source: Any, destination: Any, amount: str, currency: str = "SGD") -> dict[str, str]:
    return {"source_wallet_id": str(source), "destination_wallet_id": str(destination),
            "amount": amount, "currency": currency}  # fmt: skip


def group(client: Any, headers: dict[str, str], *legs: dict[str, str]) -> Any:
    return submit(client, headers, {"type": "group", "legs": list(legs)})


def funded(
    client: Any, headers: dict[str, str], make: Any, amount: str, currency: str = "SGD"
) -> Any:
    wallet_id = make(currency)
    submit(client, headers, deposit_body(wallet_id, amount, currency))
    drain_stream()
    return wallet_id


def test_a_split_payment_applies_every_leg_in_one_transaction(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    payer = funded(client, service_headers, wallet_factory, "100.00")
    merchant, fees = wallet_factory(), wallet_factory()
    response = group(
        client, service_headers, leg(payer, merchant, "47.50"), leg(payer, fees, "2.50")
    )
    assert response.status_code == 202
    body = response.get_json()
    assert body["type"] == "group" and len(body["legs"]) == 2 and "source_wallet_id" not in body
    assert body["legs"][0] == leg(payer, merchant, "47.50")
    drain_stream()
    assert statuses([body["id"]])[body["id"]]["status"] == "completed"
    assert (balance_minor(payer), balance_minor(merchant), balance_minor(fees)) == (5000, 4750, 250)
    assert_ledger_consistent()


def test_a_failing_leg_fails_the_group_and_leaves_every_wallet_untouched(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "10.00")
    b = funded(client, service_headers, wallet_factory, "1.00")
    c = wallet_factory()
    body = group(client, service_headers, leg(a, c, "5.00"), leg(b, c, "2.00")).get_json()
    drain_stream()
    result = statuses([body["id"]])[body["id"]]
    assert (result["status"], result["failure_code"]) == ("failed", "insufficient_funds")
    transaction = client.get(f"/v1/transactions/{body['id']}", headers=service_headers).get_json()
    assert transaction["failure_message"].startswith("leg 1:")
    assert (balance_minor(a), balance_minor(b), balance_minor(c)) == (1000, 100, 0)


def test_a_currency_exchange_through_system_wallets_conserves_each_currency(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    from sqlalchemy import text

    from shared import db

    sgd = funded(client, service_headers, wallet_factory, "100.00")
    usd = wallet_factory("USD")
    with db.transaction() as session:
        system = dict(
            session.execute(
                text(
                    "SELECT currency, id FROM wallets WHERE is_system AND currency IN ('SGD', 'USD')"
                )
            ).all()
        )
    body = group(client, service_headers, leg(sgd, system["SGD"], "13.50"),
                 leg(system["USD"], usd, "10.00", "USD")).get_json()  # fmt: skip
    drain_stream()
    assert statuses([body["id"]])[body["id"]]["status"] == "completed"
    assert (balance_minor(sgd), balance_minor(usd)) == (8650, 1000)
    assert_ledger_consistent()


def test_a_group_applies_after_earlier_debits_and_before_later_ones(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "100.00")
    b = funded(client, service_headers, wallet_factory, "100.00")
    sink = wallet_factory()
    withdraw = {"type": "withdrawal", "currency": "SGD", "amount": "100.00"}
    earlier = submit(client, service_headers, {**withdraw, "source_wallet_id": str(b)})
    both = group(client, service_headers, leg(a, sink, "100.00"), leg(b, sink, "1.00"))
    later = submit(client, service_headers, {**withdraw, "source_wallet_id": str(a)})
    ids = [r.get_json()["id"] for r in (earlier, both, later)]

    drain_stream()  # b's withdrawal, then the group, then a's withdrawal: acceptance order
    result = statuses(ids)
    assert result[ids[0]]["status"] == "completed"
    assert (result[ids[1]]["status"], result[ids[1]]["failure_code"]) == (
        "failed", "insufficient_funds",
    )  # fmt: skip
    assert result[ids[2]]["status"] == "completed"  # a kept its 100.00: the group failed
    assert (balance_minor(a), balance_minor(b)) == (0, 0)
    assert_ledger_consistent()


@pytest.mark.parametrize(
    ("legs", "field"),
    [
        (1, "legs"),
        (51, "legs"),
    ],
)
def test_a_group_needs_two_to_fifty_legs(
    client: Any, service_headers: dict[str, str], legs: int, field: str
) -> None:
    one = leg(uuid.uuid4(), uuid.uuid4(), "1.00")
    response = group(client, service_headers, *([one] * legs))
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == field


def test_a_leg_in_the_wrong_currency_names_the_leg(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b, usd = wallet_factory(), wallet_factory(), wallet_factory("USD")
    response = group(client, service_headers, leg(a, b, "1.00"), leg(a, usd, "1.00"))
    problem = response.get_json()
    assert (response.status_code, problem["code"]) == (422, "currency_mismatch")
    assert problem["errors"][0]["field"] == "legs.1.destination_wallet_id"
    missing = group(client, service_headers, leg(a, b, "1.00"), leg(a, uuid.uuid4(), "1.00"))
    assert (missing.status_code, missing.get_json()["code"]) == (404, "wallet_not_found")


def test_an_ops_retry_applies_a_failed_group_once_its_wallets_are_funded(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "10.00")
    b = wallet_factory()
    sink = wallet_factory()
    body = group(client, service_headers, leg(a, sink, "5.00"), leg(b, sink, "5.00")).get_json()
    drain_stream()
    assert statuses([body["id"]])[body["id"]]["failure_code"] == "insufficient_funds"
    submit(client, service_headers, deposit_body(b, "5.00"))
    drain_stream()
    assert (
        client.post(f"/v1/transactions/{body['id']}/retry", headers=ops_headers).status_code == 202
    )
    assert statuses([body["id"]])[body["id"]]["status"] == "pending"
    drain_stream()
    assert statuses([body["id"]])[body["id"]]["status"] == "completed"
    assert (balance_minor(a), balance_minor(b), balance_minor(sink)) == (500, 0, 1000)
    assert_ledger_consistent()


def test_listing_by_wallet_finds_the_groups_it_is_in(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a = funded(client, service_headers, wallet_factory, "10.00")
    b, c = wallet_factory(), wallet_factory()
    body = group(client, service_headers, leg(a, b, "1.00"), leg(a, c, "1.00")).get_json()
    for wallet_id in (a, c):
        listed = client.get(f"/v1/transactions?wallet_id={wallet_id}", headers=service_headers)
        assert body["id"] in [t["id"] for t in listed.get_json()["data"]]
