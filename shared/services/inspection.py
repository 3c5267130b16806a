"""Reads for operators: a transaction's ledger entries, a wallet's open holds.

``tally transactions show`` and ``tally wallets show`` use them next to the
ordinary reads of ``transactions`` and ``wallets``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.states import TransactionStatus, TransactionType
from shared.models import Transaction, ledger_entries_all


def transaction_entries(session: Session, transaction_id: uuid.UUID) -> Sequence[Any]:
    """Return the ledger entries of ``transaction_id`` (live or archived), in posting order.

    Rows have ``wallet_id``, ``direction``, ``amount_minor``, ``balance_after_minor``,
    ``sequence`` and ``created_at``; amounts in the wallet's minor units.
    """
    entries = ledger_entries_all
    return session.execute(
        select(entries)
        .where(entries.c.transaction_id == transaction_id)
        .order_by(entries.c.created_at, entries.c.id)
    ).all()


def open_holds(session: Session, wallet_id: uuid.UUID) -> Sequence[Transaction]:
    """Return the holds on ``wallet_id`` that are still ``held``, oldest first."""
    return session.scalars(
        select(Transaction)
        .where(
            Transaction.source_wallet_id == wallet_id,
            Transaction.type == TransactionType.HOLD.value,
            Transaction.status == TransactionStatus.HELD.value,
        )
        .order_by(Transaction.created_at, Transaction.id)
    ).all()
