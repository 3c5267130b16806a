"""JSON renderings of Tally's resources, exactly as api.md describes them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.ledger.money import format_amount
from shared.models import LedgerEntry, Transaction, Wallet


def timestamp(value: dt.datetime | None) -> str | None:
    """Render a datetime as RFC 3339 UTC with a ``Z`` suffix (microseconds kept)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(value: object) -> str | None:
    return None if value is None else str(value)


def wallet_json(wallet: Wallet) -> dict[str, Any]:
    """Render a Wallet object: balances as decimal strings in the wallet's currency."""
    currency = wallet.currency
    return {
        "id": str(wallet.id),
        "owner_ref": wallet.owner_ref,
        "currency": currency,
        "balance": format_amount(wallet.balance_minor, currency),
        "available_balance": format_amount(wallet.balance_minor - wallet.held_minor, currency),
        "held_balance": format_amount(wallet.held_minor, currency),
        "status": wallet.status,
        "is_system": wallet.is_system,
        "created_at": timestamp(wallet.created_at),
        "updated_at": timestamp(wallet.updated_at),
    }


def transaction_json(transaction: Transaction) -> dict[str, Any]:
    """Render a Transaction object.

    A deposit's source and a withdrawal's destination are the currency's system
    wallet (the counterparty the ledger posts to). A group carries ``legs`` in
    place of the single-leg fields (``amount``, ``currency`` and the wallet ids);
    a capture, void or expiry names its hold in ``hold_id``; a hold has ``expires_at``.
    """
    currency = transaction.currency
    body: dict[str, Any] = {"id": str(transaction.id), "type": transaction.type}
    body["status"] = transaction.status
    if transaction.legs is not None:
        body["legs"] = [
            {
                "source_wallet_id": leg["source_wallet_id"],
                "destination_wallet_id": leg["destination_wallet_id"],
                "amount": format_amount(leg["amount_minor"], leg["currency"]),
                "currency": leg["currency"],
            }
            for leg in transaction.legs
        ]
    else:
        body["amount"] = format_amount(transaction.amount_minor, currency)
        body["currency"] = currency
        body["source_wallet_id"] = _id(transaction.source_wallet_id)
        body["destination_wallet_id"] = _id(transaction.destination_wallet_id)
    if transaction.hold_id is not None:
        body["hold_id"] = str(transaction.hold_id)
    body |= {
        "description": transaction.description,
        "metadata": transaction.metadata_ or {},
        "failure_code": transaction.failure_code,
        "failure_message": transaction.failure_message,
        "attempts": transaction.attempts,
        "created_at": timestamp(transaction.created_at),
        "updated_at": timestamp(transaction.updated_at),
        "completed_at": timestamp(transaction.completed_at),
    }
    if transaction.expires_at is not None:
        body["expires_at"] = timestamp(transaction.expires_at)
    return body


def entry_json(entry: LedgerEntry, currency: str) -> dict[str, Any]:
    """Render a LedgerEntry object; ``currency`` is its wallet's."""
    return {
        "id": str(entry.id),
        "wallet_id": str(entry.wallet_id),
        "transaction_id": str(entry.transaction_id),
        "transaction_type": entry.transaction_type,
        "direction": entry.direction,
        "amount": format_amount(entry.amount_minor, currency),
        "balance_after": format_amount(entry.balance_after_minor, currency),
        "sequence": entry.sequence,
        "created_at": timestamp(entry.created_at),
    }


def page_json(data: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """Render a list page: ``{"data": [...], "next_cursor": str | None}``."""
    return {"data": data, "next_cursor": next_cursor}
