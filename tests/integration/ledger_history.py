"""Write a ledger history straight into the database, with the clock faked in the data.

The maintenance jobs work on days, so their tests need entries created days
ago. Instead of running the worker and sleeping, :func:`write_history` inserts
completed (or, on an overdraft, failed) transactions with their entries and
balance updates by SQL, with explicit ``created_at`` values, keeping every
ledger invariant: each wallet's ``sequence`` runs on without gaps,
``balance_after`` is the running balance, the currency's system wallet is the
counterparty of deposits and withdrawals (so totals stay zero), and entries'
``created_at`` grows with ``sequence`` for the history's own wallets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Iterable

from sqlalchemy import text

from shared import db


@dataclasses.dataclass(frozen=True)
class Step:
    """One transaction of a history: ``kind`` is deposit, withdrawal or transfer."""

    kind: str
    amount_minor: int
    at: dt.datetime
    source: uuid.UUID | None = None
    destination: uuid.UUID | None = None


@functools.cache
def _api_key_id() -> uuid.UUID:
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        key, _ = create_api_key(session, role=Role.SERVICE, name="ledger history")
    return key.id


def utc_midnight(days_ago: int) -> dt.datetime:
    """Return the start of the UTC day ``days_ago`` days before today."""
    today = dt.datetime.now(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(), tzinfo=dt.UTC)


def write_history(steps: Iterable[Step], *, currency: str = "SGD") -> list[uuid.UUID]:
    """Apply ``steps`` in time order in one database transaction; return their transaction ids.

    A step that would overdraw a non-system wallet is recorded as ``failed``
    (``insufficient_funds``) with no entries, as the worker would.
    """
    steps = sorted(steps, key=lambda s: s.at)
    ids: list[uuid.UUID] = []
    with db.transaction() as session:
        system_id = session.execute(
            text("SELECT id FROM wallets WHERE currency = :c AND is_system"), {"c": currency}
        ).scalar_one()
        touched = sorted(
            {system_id} | {w for s in steps for w in (s.source, s.destination) if w is not None}
        )
        state = {
            row.id: [row.balance_minor, row.last_sequence, row.is_system]
            for row in session.execute(
                text(
                    "SELECT id, balance_minor, last_sequence, is_system FROM wallets "
                    "WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE"
                ),
                {"ids": touched},
            )
        }
        transactions: list[dict[str, object]] = []
        entries: list[dict[str, object]] = []
        for step in steps:
            source = step.source if step.kind != "deposit" else system_id
            destination = step.destination if step.kind != "withdrawal" else system_id
            assert source is not None and destination is not None and source != destination
            transaction_id = uuid.uuid4()
            ids.append(transaction_id)
            balance, _, is_system = state[source]
            ok = is_system or balance >= step.amount_minor
            transactions.append(
                {
                    "id": transaction_id,
                    "type": step.kind,
                    "status": "completed" if ok else "failed",
                    "amount": step.amount_minor,
                    "currency": currency,
                    "source": source,
                    "destination": destination,
                    "lane": destination if step.kind == "deposit" else source,
                    "failure_code": None if ok else "insufficient_funds",
                    "api_key_id": _api_key_id(),
                    "key": str(transaction_id),
                    "at": step.at,
                }
            )
            if not ok:
                continue
            for wallet_id, direction, sign in ((source, "debit", -1), (destination, "credit", 1)):
                state[wallet_id][0] += sign * step.amount_minor
                state[wallet_id][1] += 1
                entries.append(
                    {
                        "wallet_id": wallet_id,
                        "transaction_id": transaction_id,
                        "type": step.kind,
                        "direction": direction,
                        "amount": step.amount_minor,
                        "balance_after": state[wallet_id][0],
                        "sequence": state[wallet_id][1],
                        "at": step.at,
                    }
                )
        if transactions:
            session.execute(
                text(
                    "INSERT INTO transactions (id, type, status, amount_minor, currency, "
                    "source_wallet_id, destination_wallet_id, lane_wallet_id, failure_code, "
                    "attempts, api_key_id, idempotency_key, request_hash, created_at, updated_at, "
                    "completed_at) VALUES (:id, :type, :status, :amount, :currency, :source, "
                    ":destination, :lane, :failure_code, 1, :api_key_id, :key, 'history', :at, "
                    ":at, :at)"
                ),
                transactions,
            )
        if entries:
            session.execute(
                text(
                    "INSERT INTO ledger_entries (wallet_id, transaction_id, transaction_type, "
                    "direction, amount_minor, balance_after_minor, sequence, created_at) VALUES "
                    "(:wallet_id, :transaction_id, :type, :direction, :amount, :balance_after, "
                    ":sequence, :at)"
                ),
                entries,
            )
        session.execute(
            text(
                "UPDATE wallets SET balance_minor = :balance, last_sequence = :sequence, "
                "updated_at = now() WHERE id = :id"
            ),
            [
                {"id": wallet_id, "balance": balance, "sequence": sequence}
                for wallet_id, (balance, sequence, _) in state.items()
            ],
        )
    return ids
