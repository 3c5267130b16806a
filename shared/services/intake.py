"""Intake: record a submitted transaction as ``pending``, idempotently, and publish it after commit.

Idempotency follows Stripe and draft-ietf-httpapi-idempotency-key-header: one
``Idempotency-Key`` per API key maps to one transaction; the same key with the
same request replays it; with a different request it is rejected
(``idempotency_key_reused``). Concurrent duplicates are settled by the unique
constraint ``(api_key_id, idempotency_key)`` with ``ON CONFLICT DO NOTHING``:
the loser waits for the winner's commit and replays its row, so there is never
a second transaction. A request that fails validation records nothing, so its
key stays free for a corrected request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import RowMapping, select, text
from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.ledger.errors import IdempotencyKeyReused, ValidationFailed
from shared.ledger.states import TransactionStatus, TransactionType
from shared.models import Transaction
from shared.services.processor import shard_of
from shared.services.wallets import currency_not_enabled, wallet_not_found

#: Signals "shard S has pending work" to the broker; called after commit only.
Publish = Callable[[int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A validated submission, as parsed at the HTTP edge.

    Attributes:
        type: deposit, withdrawal, transfer or hold.
        amount_minor: positive amount in minor units of ``currency``.
        currency: ISO 4217 code.
        source_wallet_id: the debited wallet (withdrawal, transfer, hold), else None.
        destination_wallet_id: the credited wallet (deposit, transfer), else None.
        description: free text, at most 500 characters.
        metadata: flat string map, at most 50 keys.
        expires_in_seconds: a hold's lifetime in seconds; None for other types.
    """

    type: TransactionType
    amount_minor: int
    currency: str
    source_wallet_id: uuid.UUID | None = None
    destination_wallet_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    expires_in_seconds: int | None = None

    def fingerprint(self) -> str:
        """Return the SHA-256 (hex) of the request's canonical JSON, to detect a reused key."""
        fields = dataclasses.asdict(self)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


#: One round trip: resolve the named wallets and the currency's system wallet,
#: and insert the transaction only if every wallet exists in ``currency`` and the
#: currency is enabled (every enabled currency has a system wallet). The outer
#: SELECT always returns one row, so a refused insert can be explained without
#: another query. Casts give every parameter a type: an untyped NULL in a
#: SELECT list would be text.
_SUBMIT_SQL = text(
    """
WITH named AS (
    SELECT id, currency FROM wallets WHERE id = ANY(CAST(:named_ids AS uuid[]))
), system AS (
    SELECT w.id FROM wallets w JOIN currencies c ON c.code = w.currency
    WHERE w.is_system AND w.currency = CAST(:currency AS text) AND c.enabled
), inserted AS (
    INSERT INTO transactions (
        id, type, amount_minor, currency, source_wallet_id, destination_wallet_id,
        lane_wallet_id, shard, description, metadata, api_key_id, idempotency_key,
        request_hash, expires_at)
    SELECT CAST(:id AS uuid), CAST(:type AS text), CAST(:amount_minor AS bigint),
        CAST(:currency AS text), COALESCE(CAST(:source_id AS uuid), system.id),
        COALESCE(CAST(:destination_id AS uuid), system.id), CAST(:lane_id AS uuid),
        CAST(:shard AS smallint), CAST(:description AS text), CAST(:metadata AS jsonb),
        CAST(:api_key_id AS uuid), CAST(:idempotency_key AS text),
        CAST(:request_hash AS text), CAST(:expires_at AS timestamptz)
    FROM system
    WHERE (SELECT count(*) FROM named WHERE currency = CAST(:currency AS text))
        = CAST(:named_count AS int)
    ON CONFLICT ON CONSTRAINT transactions_idempotency_key DO NOTHING
    RETURNING *
)
SELECT
    (SELECT array_agg(ARRAY[id::text, currency]) FROM named) AS named_wallets,
    (SELECT id FROM system) AS system_wallet_id,
    inserted.*
FROM (SELECT 1) AS one LEFT JOIN inserted ON true
"""
)


def submit_transaction(
    session: Session,
    request: TransactionRequest,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    shard_count: int,
    publish: Publish,
) -> tuple[Transaction, bool]:
    """Record ``request`` as a pending transaction and publish its shard after commit.

    A new key (the common case) costs one statement and the commit; a replay
    or a concurrent duplicate conflicts and is read back.

    Args:
        request: the validated submission.
        api_key_id: the submitting key; idempotency keys are scoped to it.
        idempotency_key: the client's ``Idempotency-Key``.
        shard_count: ``TALLY_SHARD_COUNT``: the lane's shard is stored with the row.
        publish: called with the shard after the commit.

    Returns:
        ``(transaction, replayed)``: ``replayed`` is True when the key was seen
        before with the same request and the existing transaction is returned.

    Raises:
        IdempotencyKeyReused: the key was used with a different request.
        ValidationFailed: currency not enabled, source equals destination
            (``validation_failed``), or a wallet of another currency (``currency_mismatch``).
        NotFound: ``wallet_not_found``.
    """
    named = _named_wallets(request)
    lane_id = _lane_of(request)
    shard = shard_of(lane_id, shard_count)
    fingerprint = request.fingerprint()
    expires_at = None
    if request.expires_in_seconds is not None:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.expires_in_seconds)
    row = (
        session.execute(
            _SUBMIT_SQL,
            {
                "named_ids": list(named.values()),
                "named_count": len(named),
                "id": uuid.uuid4(),
                "type": request.type.value,
                "amount_minor": request.amount_minor,
                "currency": request.currency,
                "source_id": request.source_wallet_id,
                "destination_id": request.destination_wallet_id,
                "lane_id": lane_id,
                "shard": shard,
                "description": request.description,
                "metadata": json.dumps(request.metadata),
                "api_key_id": api_key_id,
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "expires_at": expires_at,
            },
        )
        .mappings()
        .one()
    )
    if row["id"] is None:
        _explain_refusal(request, named, row["named_wallets"] or [], row["system_wallet_id"])
        existing = _find(session, api_key_id, idempotency_key)
        assert existing is not None  # the conflicting row committed before ours could
        return _replay(session, existing, fingerprint, publish), True
    after_commit(session, lambda: publish(shard))
    return _transient(row), False


def _transient(row: RowMapping) -> Transaction:
    """Return a Transaction (not attached to any session) from an inserted row."""
    values = {name: row[name] for name in _COLUMN_KEYS}
    values["metadata_"] = row["metadata"]
    return Transaction(**values)


#: The Transaction attributes that share their column's name (``metadata_`` does not).
_COLUMN_KEYS = tuple(c.key for c in Transaction.__table__.columns if c.key != "metadata")


def _find(session: Session, api_key_id: uuid.UUID, idempotency_key: str) -> Transaction | None:
    return session.scalar(
        select(Transaction)
        .where(Transaction.api_key_id == api_key_id, Transaction.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    )


def _replay(
    session: Session, existing: Transaction, fingerprint: str, publish: Publish
) -> Transaction:
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new transaction"
        )
    if existing.status == TransactionStatus.PENDING:
        # A client retrying after a timeout may be retrying a lost publish too.
        shard = existing.shard
        after_commit(session, lambda: publish(shard))
    return existing


def _named_wallets(request: TransactionRequest) -> dict[str, uuid.UUID]:
    """Return the wallet ids the request names, by field.

    Raises:
        ValidationFailed: source and destination are the same wallet.
    """
    if (
        request.source_wallet_id is not None
        and request.source_wallet_id == request.destination_wallet_id
    ):
        raise ValidationFailed(
            "source and destination wallets must differ",
            errors=[{"field": "destination_wallet_id", "message": "equals source_wallet_id"}],
        )
    return {
        field: wallet_id
        for field, wallet_id in (
            ("source_wallet_id", request.source_wallet_id),
            ("destination_wallet_id", request.destination_wallet_id),
        )
        if wallet_id is not None
    }


def _lane_of(request: TransactionRequest) -> uuid.UUID:
    """Return the lane: the debited wallet, except a deposit's, which is its destination.

    A deposit's lane is the credited wallet so that it is ordered before the
    same wallet's later debits. A deposit's source and a withdrawal's
    destination are the currency's system wallet, filled in by the database.
    """
    lane = (
        request.destination_wallet_id
        if request.type is TransactionType.DEPOSIT
        else request.source_wallet_id
    )
    assert lane is not None  # the request schema requires it for the type
    return lane


def _explain_refusal(
    request: TransactionRequest,
    named: Mapping[str, uuid.UUID],
    found_rows: Sequence[Sequence[str]],
    system_wallet_id: uuid.UUID | None,
) -> None:
    """Raise why the insert was refused; return if the cause was a key conflict.

    Raises:
        ValidationFailed: ``currency_not_enabled`` / ``unknown_currency``, or
            ``currency_mismatch`` naming the field.
        NotFound: ``wallet_not_found``.
    """
    if system_wallet_id is None:
        raise currency_not_enabled(request.currency)
    found = {uuid.UUID(wallet_id): currency for wallet_id, currency in found_rows}
    for field, wallet_id in named.items():
        if wallet_id not in found:
            raise wallet_not_found(wallet_id)
        if found[wallet_id] != request.currency:
            raise ValidationFailed(
                f"wallet {wallet_id} holds {found[wallet_id]}, not {request.currency}",
                code="currency_mismatch",
                errors=[{"field": field, "message": f"wallet holds {found[wallet_id]}"}],
            )
