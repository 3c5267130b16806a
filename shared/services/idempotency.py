"""Idempotent recording: one ``Idempotency-Key`` per API key maps to one transaction.

Follows Stripe and draft-ietf-httpapi-idempotency-key-header: the same key with
the same request replays the transaction; with a different request it is
rejected (``idempotency_key_reused``). Concurrent duplicates are settled by the
unique constraint ``(api_key_id, idempotency_key)`` with ``ON CONFLICT DO
NOTHING``: the loser waits for the winner's commit and replays its row, so
there is never a second transaction. Every way of recording a transaction
(``intake``, ``groups``, ``holds``) ends here when its insert conflicts.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.ledger.errors import IdempotencyKeyReused
from shared.ledger.states import TransactionStatus
from shared.models import Transaction

#: Signals "shard S has pending work" to the broker; called after commit only.
Publish = Callable[[int], None]


def fingerprint(request: object) -> str:
    """Return the SHA-256 (hex) of a request's canonical JSON, to detect a reused key.

    Args:
        request: any JSON-able value; UUIDs and other values are rendered with ``str``.
    """
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(
    session: Session,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_hash: str,
    publish: Publish,
) -> Transaction:
    """Return the transaction already recorded under the key, after a conflicting insert.

    A pending one is published again after the commit: a client retrying after
    a timeout may be retrying a lost publish too.

    Raises:
        IdempotencyKeyReused: the key was recorded with a different request.
    """
    existing = session.scalar(
        select(Transaction)
        .where(Transaction.api_key_id == api_key_id, Transaction.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    )
    assert existing is not None  # the conflicting row committed before ours could
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new transaction"
        )
    if existing.status == TransactionStatus.PENDING:
        shard = existing.shard
        after_commit(session, lambda: publish(shard))
    return existing


def insert_or_replay(
    session: Session, values: dict[str, Any], *, publish: Publish
) -> tuple[Transaction, bool]:
    """Insert a pending transaction with ``values`` unless its key is taken; then replay.

    Args:
        values: the row's columns by attribute name, ``api_key_id``,
            ``idempotency_key`` and ``request_hash`` included.

    Returns:
        ``(transaction, replayed)``: the new row and False, or the row already
        recorded under the key and True (see :func:`replay`).

    Raises:
        IdempotencyKeyReused: the key was recorded with a different request.
    """
    inserted = session.scalar(
        pg_insert(Transaction)
        .values(**values)
        .on_conflict_do_nothing(constraint="transactions_idempotency_key")
        .returning(Transaction)
    )
    if inserted is not None:
        return inserted, False
    existing = replay(
        session,
        api_key_id=values["api_key_id"],
        idempotency_key=values["idempotency_key"],
        request_hash=values["request_hash"],
        publish=publish,
    )
    return existing, True
