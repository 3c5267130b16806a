"""JSON renderings of Tally's resources, exactly as api.md describes them.

A transaction and a reconciliation run render in ``shared.rendering``, which
the worker's webhook payloads use too.
"""

from __future__ import annotations

from typing import Any

from shared.ledger.money import format_amount
from shared.models import LedgerEntry, Wallet
from shared.rendering import timestamp, transaction_json

__all__ = ["entry_json", "page_json", "timestamp", "transaction_json", "wallet_json"]


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
        "overdraft_limit": format_amount(wallet.overdraft_limit_minor, currency),
        "status": wallet.status,
        "is_system": wallet.is_system,
        "created_at": timestamp(wallet.created_at),
        "updated_at": timestamp(wallet.updated_at),
    }


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
