"""Idempotent recording: one ``Idempotency-Key`` per API key maps to one transaction.

Follows Stripe and draft-ietf-httpapi-idempotency-key-header: the same key with
the same request replays the transaction; with a different request it is
rejected (``idempotency_key_reused``). Concurrent duplicates are settled by the
unique constraint ``(api_key_id, idempotency_key)`` with ``ON CONFLICT DO
NOTHING``: the loser waits for the winner's commit and replays its row, so
there is never a second transaction. Every way of recording a transaction
(``intake``, ``groups``, ``holds``) ends here when its insert conflicts.

A recorded or replayed transaction that is ``pending`` sends a drain after the
commit (``broker.send_after_commit``): a client retrying after a timeout may be
retrying a lost signal too.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

import broker
from shared.ledger.errors import IdempotencyKeyReused
from shared.ledger.states import TransactionStatus
from shared.models import Transaction


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
) -> Transaction:
    """Return the transaction already recorded under the key, after a conflicting insert.

    A pending one sends a drain again after the commit.

    Raises:
        IdempotencyKeyReused: the key was recorded with a different request.
    """
    [existing] = replay_many(session, requests=[(api_key_id, idempotency_key, request_hash)])
    if isinstance(existing, IdempotencyKeyReused):
        raise existing
    return existing


def replay_if_recorded(
    session: Session,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_hash: str,
) -> Transaction | None:
    """Return the transaction recorded under the key, as :func:`replay` does; None if the key is free.

    For a request refused for a state that may have changed since its key was
    first used (a reversal of a transaction reversed since): its replay
    answers as the first request did, never with the refusal.

    Raises:
        IdempotencyKeyReused: the key was recorded with a different request.
    """
    recorded = session.scalar(
        select(Transaction.id).where(
            Transaction.api_key_id == api_key_id, Transaction.idempotency_key == idempotency_key
        )
    )
    if recorded is None:
        return None
    return replay(
        session,
        api_key_id=api_key_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


def replay_many(
    session: Session,
    *,
    requests: Sequence[tuple[uuid.UUID, str, str]],
) -> list[Transaction | IdempotencyKeyReused]:
    """Return what each ``(API key id, idempotency key, request hash)`` replays, after conflicting inserts.

    One query reads every key's transaction, whether an earlier request or an
    earlier statement of this database transaction recorded it. If one is
    pending, a drain is sent after the commit, as :func:`replay` does.

    Returns:
        One entry per request, in order: the transaction recorded under its
        key, or the ``IdempotencyKeyReused`` error when it was recorded with a
        different request hash.
    """
    keys = sorted({(api_key_id, key) for api_key_id, key, _ in requests})
    found = {
        (transaction.api_key_id, transaction.idempotency_key): transaction
        for transaction in session.scalars(
            select(Transaction)
            .where(tuple_(Transaction.api_key_id, Transaction.idempotency_key).in_(keys))
            .execution_options(populate_existing=True)
        )
    }
    results: list[Transaction | IdempotencyKeyReused] = []
    pending = False
    for api_key_id, key, request_hash in requests:
        # The conflicting row committed before ours could, or is ours.
        existing = found[(api_key_id, key)]
        if existing.request_hash != request_hash:
            results.append(
                IdempotencyKeyReused(
                    "this Idempotency-Key was already used with a different request; "
                    "use a new key for a new transaction"
                )
            )
            continue
        if existing.status == TransactionStatus.PENDING:
            pending = True
        results.append(existing)
    if pending:
        broker.send_after_commit(session, broker.DRAIN)
    return results


def insert_or_replay(session: Session, values: dict[str, Any]) -> tuple[Transaction, bool]:
    """Insert a pending transaction with ``values`` unless its key is taken; then replay.

    Either way a drain is sent after the commit if the transaction is pending
    (nothing is sent if the caller rolls the insert back).

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
        broker.send_after_commit(session, broker.DRAIN)
        return inserted, False
    existing = replay(
        session,
        api_key_id=values["api_key_id"],
        idempotency_key=values["idempotency_key"],
        request_hash=values["request_hash"],
    )
    return existing, True
