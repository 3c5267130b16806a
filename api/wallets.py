"""``/v1/wallets``: create, read, list, freeze, overdraft limit, entries, point-in-time balance."""

from __future__ import annotations

import datetime as dt
import uuid

from flask import Blueprint, Response

from api.auth import current_actor, require_role
from api.render import answer, page
from api.requests import json_body, path_id, query
from api.responses import Balance, LedgerEntry, Wallet
from api.schemas import BalanceQuery, ListQuery, WalletCreate, WalletListQuery, WalletPatch
from shared import db
from shared.ledger.states import WalletStatus
from shared.services import wallets
from shared.services.api_keys import Role

blueprint = Blueprint("wallets", __name__, url_prefix="/v1/wallets")


def _wallet_id(value: str) -> uuid.UUID:
    return path_id(value, not_found_code="wallet_not_found")


@blueprint.post("")
def create_wallet() -> Response:
    """Create a wallet: 201 with ``Location``; 409 ``wallet_exists`` for a second one."""
    body = WalletCreate.model_validate(json_body())
    with db.transaction() as session:
        wallet = wallets.create_wallet(session, owner_ref=body.owner_ref, currency=body.currency)
    return answer(Wallet, wallet, 201, {"Location": f"/v1/wallets/{wallet.id}"})


@blueprint.get("")
def list_wallets() -> Response:
    """List wallets, newest first, optionally of one ``owner_ref``."""
    params = query(WalletListQuery)
    with db.transaction() as session:
        rows, next_cursor = wallets.list_wallets(
            session, owner_ref=params.owner_ref, limit=params.limit, cursor=params.cursor
        )
    return page(Wallet, rows, next_cursor)


@blueprint.get("/<wallet_id>")
def get_wallet(wallet_id: str) -> Response:
    """Return one wallet."""
    with db.transaction() as session:
        wallet = wallets.get_wallet(session, _wallet_id(wallet_id))
    return answer(Wallet, wallet)


@blueprint.patch("/<wallet_id>")
@require_role(Role.OPS)
def patch_wallet(wallet_id: str) -> Response:
    """Freeze or unfreeze a wallet, or set its overdraft limit (ops).

    A limit below what the wallet already uses (its available balance is
    below minus the new limit) is refused with 409 ``overdraft_in_use``.
    """
    body = WalletPatch.model_validate(json_body())
    with db.transaction() as session:
        wallet = wallets.update_wallet(
            session,
            _wallet_id(wallet_id),
            status=WalletStatus(body.status) if body.status is not None else None,
            overdraft_limit=body.overdraft_limit,
            actor=current_actor(),
        )
    return answer(Wallet, wallet)


@blueprint.get("/<wallet_id>/entries")
def list_entries(wallet_id: str) -> Response:
    """List the wallet's ledger entries, newest first."""
    params = query(ListQuery)
    with db.transaction() as session:
        wallet = wallets.get_wallet(session, _wallet_id(wallet_id))
        rows, next_cursor = wallets.list_entries(
            session, wallet.id, limit=params.limit, cursor=params.cursor
        )
    return page(LedgerEntry, rows, next_cursor, currency=wallet.currency)


@blueprint.get("/<wallet_id>/balance")
def get_balance(wallet_id: str) -> Response:
    """Return the balance after every entry up to ``as_of`` (default: now)."""
    params = query(BalanceQuery)
    as_of = params.as_of or dt.datetime.now(dt.UTC)
    with db.transaction() as session:
        wallet = wallets.get_wallet(session, _wallet_id(wallet_id))
        balance_minor = wallets.balance_as_of(session, wallet.id, as_of)
    return answer(
        Balance,
        {"wallet_id": wallet.id, "currency": wallet.currency, "balance_minor": balance_minor,
         "as_of": as_of},
    )  # fmt: skip
