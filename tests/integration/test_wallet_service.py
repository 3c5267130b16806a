"""Wallet services inside a per-test savepoint (rolled back after each test)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.ledger.errors import Conflict, NotFound, ValidationFailed
from shared.ledger.states import WalletStatus
from shared.models import Currency, Wallet
from shared.services import wallets


def test_ensure_currencies_is_idempotent_and_disables_the_rest(db_session: Any) -> None:
    wallets.ensure_currencies(db_session, ["SGD", "JPY"])
    wallets.ensure_currencies(db_session, ["SGD", "JPY"])
    assert wallets.enabled_currencies(db_session) == {"SGD", "JPY"}
    systems = db_session.scalar(
        select(func.count()).select_from(Wallet).where(Wallet.is_system, Wallet.currency == "SGD")
    )
    assert systems == 1
    assert db_session.get(Currency, "JPY").exponent == 0


def test_create_wallet_conflict_names_the_existing_wallet(db_session: Any) -> None:
    owner = f"svc-{uuid.uuid4()}"
    first = wallets.create_wallet(db_session, owner_ref=owner, currency="SGD")
    with pytest.raises(Conflict) as error:
        wallets.create_wallet(db_session, owner_ref=owner, currency="SGD")
    assert error.value.code == "wallet_exists" and str(first.id) in error.value.detail


def test_create_wallet_needs_an_enabled_currency(db_session: Any) -> None:
    with pytest.raises(ValidationFailed) as error:
        wallets.create_wallet(db_session, owner_ref="x", currency="CHF")
    assert error.value.code == "currency_not_enabled"


def test_set_wallet_status_freezes_and_refuses_system_wallets(db_session: Any) -> None:
    wallet = wallets.create_wallet(db_session, owner_ref=f"svc-{uuid.uuid4()}", currency="SGD")
    assert wallets.set_wallet_status(db_session, wallet.id, WalletStatus.FROZEN).status == "frozen"
    system_id = db_session.scalar(
        select(Wallet.id).where(Wallet.is_system, Wallet.currency == "SGD")
    )
    with pytest.raises(Conflict):
        wallets.set_wallet_status(db_session, system_id, WalletStatus.FROZEN)
    with pytest.raises(NotFound):
        wallets.set_wallet_status(db_session, uuid.uuid4(), WalletStatus.FROZEN)
