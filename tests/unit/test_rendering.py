"""The response shapes render rows as docs/api.md describes them, and refuse rows that do not fit."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from api.responses import LedgerEntry, Wallet
from shared.rendering import ReconciliationRun, ShapeError, Transaction, timestamp

AT = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)


def transaction_row(**overrides: Any) -> SimpleNamespace:
    row = dict(
        id=uuid.uuid4(), type="transfer", status="pending", amount_minor=1550, currency="SGD",
        source_wallet_id=uuid.uuid4(), destination_wallet_id=uuid.uuid4(), legs=None,
        hold_id=None, description=None, metadata_=None, failure_code=None,
        failure_message=None, attempts=0, created_at=AT, updated_at=AT, completed_at=None,
        expires_at=None, lane_sequence=7,
    )  # fmt: skip
    return SimpleNamespace(**(row | overrides))


def test_a_transfer_renders_every_field_in_order_and_no_column_it_does_not_declare() -> None:
    row = transaction_row()
    body = json.loads(Transaction.render(row))
    assert list(body) == [
        "id", "type", "status", "amount", "currency", "source_wallet_id",
        "destination_wallet_id", "description", "metadata", "failure_code", "failure_message",
        "attempts", "created_at", "updated_at", "completed_at",
    ]  # fmt: skip
    assert body["amount"] == "15.50" and body["metadata"] == {}
    assert body["created_at"] == "2026-11-22T10:00:00.000000Z"


def test_a_group_has_legs_in_place_of_the_single_leg_fields() -> None:
    legs = [
        {"source_wallet_id": str(uuid.uuid4()), "destination_wallet_id": str(uuid.uuid4()),
         "amount_minor": 1200, "currency": "JPY"},
    ]  # fmt: skip
    body = Transaction.dump(transaction_row(type="group", legs=legs))
    assert "amount" not in body and "source_wallet_id" not in body and "currency" not in body
    assert body["legs"] == [
        {"source_wallet_id": legs[0]["source_wallet_id"],
         "destination_wallet_id": legs[0]["destination_wallet_id"],
         "amount": "1200", "currency": "JPY"}
    ]  # fmt: skip


def test_a_hold_keeps_its_null_destination_and_shows_its_expiry() -> None:
    body = Transaction.dump(transaction_row(type="hold", destination_wallet_id=None, expires_at=AT))
    assert body["destination_wallet_id"] is None and body["expires_at"] == timestamp(AT)
    assert "hold_id" not in body and "legs" not in body


def test_a_run_recorded_before_holds_has_no_held_amounts() -> None:
    mismatch = {"wallet_id": str(uuid.uuid4()), "currency": "SGD",
                "stored_balance_minor": 100, "ledger_balance_minor": -5}  # fmt: skip
    run = SimpleNamespace(
        id=uuid.uuid4(),
        status="mismatch",
        started_at=AT,
        finished_at=AT,
        wallets_checked=2,
        mismatches=[mismatch],
        currency_totals={"SGD": 0, "JPY": 12},
        error=None,
    )
    body = ReconciliationRun.dump(run)
    assert body["mismatches"] == [
        {"wallet_id": mismatch["wallet_id"], "currency": "SGD",
         "stored_balance": "1.00", "ledger_balance": "-0.05"}
    ]  # fmt: skip
    assert body["currency_totals"] == {"JPY": "12", "SGD": "0.00"}


def test_a_wallet_and_its_entries_render_in_its_currency() -> None:
    wallet = SimpleNamespace(
        id=uuid.uuid4(),
        owner_ref="+65",
        currency="JPY",
        balance_minor=500,
        held_minor=200,
        available_minor=300,
        overdraft_limit_minor=50,
        status="active",
        is_system=False,
        created_at=AT,
        updated_at=AT,
    )
    body = Wallet.dump(wallet)
    assert (
        body["balance"],
        body["available_balance"],
        body["held_balance"],
        body["overdraft_limit"],
    ) == ("500", "300", "200", "50")
    entry = SimpleNamespace(
        id=42,
        wallet_id=wallet.id,
        transaction_id=uuid.uuid4(),
        transaction_type="deposit",
        direction="credit",
        amount_minor=1050,
        balance_after_minor=1050,
        sequence=1,
        created_at=AT,
    )
    rendered = LedgerEntry.dump(entry, currency="SGD")
    assert (rendered["id"], rendered["amount"], rendered["balance_after"]) == (
        "42",
        "10.50",
        "10.50",
    )


def test_a_row_that_does_not_fit_its_shape_is_our_error_not_the_clients() -> None:
    """Not pydantic's ValidationError, which the API answers as the client's 422."""
    with pytest.raises(ShapeError) as raised:
        Transaction.render(transaction_row(status="lost"))
    assert not isinstance(raised.value, ValidationError)
