"""Intake: record a submitted transaction as ``pending``, idempotently, and publish it after commit.

Idempotency is ``shared.services.idempotency``'s: one ``Idempotency-Key`` per
API key maps to one transaction. A request that fails validation records
nothing, so its key stays free for a corrected request. Single-wallet types
(deposit, withdrawal, transfer, hold) take one statement; a group is recorded
by ``shared.services.groups``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.ledger.errors import ValidationFailed
from shared.ledger.states import TransactionType
from shared.models import Transaction
from shared.services import groups
from shared.services.idempotency import Publish, fingerprint, replay
from shared.services.processor import shard_of
from shared.services.wallets import currency_not_enabled, wallet_not_found


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A validated submission, as parsed at the HTTP edge.

    Attributes:
        type: deposit, withdrawal, transfer, hold or group.
        amount_minor: positive amount in minor units of ``currency`` (a group: the
            sum of its legs' amounts).
        currency: ISO 4217 code (a group: its first leg's).
        source_wallet_id: the debited wallet (withdrawal, transfer, hold), else None.
        destination_wallet_id: the credited wallet (deposit, transfer), else None.
        description: free text, at most 500 characters.
        metadata: flat string map, at most 50 keys.
        expires_in_seconds: a hold's lifetime in seconds; None for other types.
        legs: a group's legs; empty for other types.
    """

    type: TransactionType
    amount_minor: int
    currency: str
    source_wallet_id: uuid.UUID | None = None
    destination_wallet_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    expires_in_seconds: int | None = None
    legs: tuple[groups.LegRequest, ...] = ()

    def fingerprint(self) -> str:
        """Return the SHA-256 (hex) of the request's canonical JSON, to detect a reused key."""
        # Field by field rather than dataclasses.asdict, whose deep copy showed in
        # the intake profile; legs are dataclasses of plain values.
        fields = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        fields["legs"] = [dataclasses.astuple(leg) for leg in self.legs]
        return fingerprint(fields)


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(TransactionRequest))


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
        request_hash, expires_at, request_id)
    SELECT CAST(:id AS uuid), CAST(:type AS text), CAST(:amount_minor AS bigint),
        CAST(:currency AS text),
        COALESCE(CAST(:source_id AS uuid),
                 CASE WHEN CAST(:type AS text) = 'deposit' THEN system.id END),
        COALESCE(CAST(:destination_id AS uuid),
                 CASE WHEN CAST(:type AS text) = 'withdrawal' THEN system.id END),
        CAST(:lane_id AS uuid),
        CAST(:shard AS smallint), CAST(:description AS text), CAST(:metadata AS jsonb),
        CAST(:api_key_id AS uuid), CAST(:idempotency_key AS text),
        CAST(:request_hash AS text), CAST(:expires_at AS timestamptz),
        CAST(:request_id AS text)
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
    request_id: str | None = None,
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
        request_id: the HTTP request's ``X-Request-Id``, stored with the row so
            the worker's log lines name it.

    Returns:
        ``(transaction, replayed)``: ``replayed`` is True when the key was seen
        before with the same request and the existing transaction is returned.

    Raises:
        IdempotencyKeyReused: the key was used with a different request.
        ValidationFailed: currency not enabled, source equals destination
            (``validation_failed``), or a wallet of another currency (``currency_mismatch``).
        NotFound: ``wallet_not_found``.
    """
    if request.type is TransactionType.GROUP:
        return groups.submit_group(
            session,
            request.legs,
            description=request.description,
            metadata=request.metadata,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request.fingerprint(),
            shard_count=shard_count,
            publish=publish,
            request_id=request_id,
        )
    named = _named_wallets(request)
    lane_id = _lane_of(request)
    shard = shard_of(lane_id, shard_count)
    request_hash = request.fingerprint()
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
                "request_hash": request_hash,
                "expires_at": expires_at,
                "request_id": request_id,
            },
        )
        .mappings()
        .one()
    )
    if row["id"] is None:
        _explain_refusal(request, named, row["named_wallets"] or [], row["system_wallet_id"])
        existing = replay(
            session,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            publish=publish,
        )
        return existing, True
    after_commit(session, lambda: publish(shard))
    return _transient(row), False


def _transient(row: RowMapping) -> Transaction:
    """Return a Transaction (not attached to any session) from an inserted row."""
    values = {name: row[name] for name in _COLUMN_KEYS}
    values["metadata_"] = row["metadata"]
    return Transaction(**values)


#: The Transaction attributes that share their column's name (``metadata_`` does not).
_COLUMN_KEYS = tuple(c.key for c in Transaction.__table__.columns if c.key != "metadata")


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
