"""JSON renderings of a Transaction and a reconciliation run, exactly as docs/api.md describes them.

Both the API's answers and the webhook payloads (``shared.services.events``)
render through here, so a transaction looks the same whichever way a client
learns of it. No Flask: the worker renders events too.
"""

from __future__ import annotations

import datetime as dt
import types
import uuid
from typing import Any

from shared.ledger.money import format_amount
from shared.models import ReconciliationRun


def timestamp(value: dt.datetime | None) -> str | None:
    """Render a datetime as RFC 3339 UTC with a ``Z`` suffix (microseconds kept)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(value: object) -> str | None:
    return None if value is None else str(value)


def transaction_json(transaction: Any) -> dict[str, Any]:
    """Render a Transaction object from anything with a transaction's attributes.

    ``transaction`` is a ``shared.models.Transaction``, or an object with the
    same attribute names (an event's view of one as it was). A deposit's source
    and a withdrawal's destination are the currency's system wallet (the
    counterparty the ledger posts to). A group carries ``legs`` in place of the
    single-leg fields (``amount``, ``currency`` and the wallet ids); a capture,
    void or expiry names its hold in ``hold_id``; a hold has ``expires_at``.
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


def run_json(run: ReconciliationRun) -> dict[str, Any]:
    """Render a reconciliation run; amounts as decimal strings in each wallet's currency."""
    return {
        "id": str(run.id),
        "status": run.status,
        "started_at": timestamp(run.started_at),
        "finished_at": timestamp(run.finished_at),
        "wallets_checked": run.wallets_checked,
        "mismatches": [
            {
                "wallet_id": m["wallet_id"],
                "currency": m["currency"],
                "stored_balance": format_amount(m["stored_balance_minor"], m["currency"]),
                "ledger_balance": format_amount(m["ledger_balance_minor"], m["currency"]),
                # Runs recorded before holds existed carry no held amounts.
                **{
                    name: format_amount(m[f"{name}_minor"], m["currency"])
                    for name in (
                        "stored_held_balance",
                        "ledger_held_balance",
                        "open_holds",
                    )
                    if f"{name}_minor" in m
                },
            }
            for m in run.mismatches
        ],
        "currency_totals": {
            code: format_amount(total_minor, code)
            for code, total_minor in sorted(run.currency_totals.items())
        },
        "error": run.error,
    }


def balance_monitor_json(monitor: Any, currency: str) -> dict[str, Any]:
    """Render a BalanceMonitor object; ``value`` in its wallet's ``currency``.

    ``monitor`` is a ``shared.models.BalanceMonitor`` or anything with its
    attributes (an event's snapshot of one).
    """
    return {
        "id": str(monitor.id),
        "wallet_id": str(monitor.wallet_id),
        "field": monitor.field,
        "operator": monitor.operator,
        "value": format_amount(monitor.value_minor, currency),
        "description": monitor.description,
        "state": monitor.state,
        "triggered_at": timestamp(monitor.triggered_at),
        "created_at": timestamp(monitor.created_at),
    }


def monitor_event_json(
    snapshot: dict[str, Any], transaction_id: uuid.UUID | None
) -> dict[str, Any]:
    """Render a balance monitor event's ``data`` from the snapshot the event keeps.

    Returns ``{"monitor": BalanceMonitor, "currency", "balance",
    "available_balance", "transaction_id"}``: the monitor and its wallet's
    balances as they were at the change, and the transaction that crossed the
    threshold (null at the monitor's creation). ``snapshot`` holds minor units
    and PostgreSQL's JSON timestamps (``shared.services.monitors``).
    """
    currency = snapshot["currency"]
    monitor = types.SimpleNamespace(
        **snapshot
        | {
            name: None if snapshot[name] is None else dt.datetime.fromisoformat(snapshot[name])
            for name in ("triggered_at", "created_at")
        }
    )
    balance_minor, held_minor = snapshot["balance_minor"], snapshot["held_minor"]
    return {
        "monitor": balance_monitor_json(monitor, currency),
        "currency": currency,
        "balance": format_amount(balance_minor, currency),
        "available_balance": format_amount(balance_minor - held_minor, currency),
        "transaction_id": _id(transaction_id),
    }
