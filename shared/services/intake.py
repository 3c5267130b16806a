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
from collections.abc import Callable

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.ledger.errors import IdempotencyKeyReused, ValidationFailed
from shared.ledger.states import TransactionStatus, TransactionType
from shared.models import Currency, Transaction, Wallet
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
    fingerprint = request.fingerprint()
    source_id, destination_id, lane_id = _resolve_wallets(session, request)
    shard = shard_of(lane_id, shard_count)
    expires_at = None
    if request.expires_in_seconds is not None:
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.expires_in_seconds)

    # Insert first: a new key (the common case) costs one statement; a replay
    # or a concurrent duplicate conflicts and is read back.
    transaction = session.scalar(
        insert(Transaction)
        .values(
            id=uuid.uuid4(),
            type=request.type.value,
            amount_minor=request.amount_minor,
            currency=request.currency,
            source_wallet_id=source_id,
            destination_wallet_id=destination_id,
            lane_wallet_id=lane_id,
            shard=shard,
            description=request.description,
            metadata_=request.metadata,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing(constraint="transactions_idempotency_key")
        .returning(Transaction)
    )
    if transaction is None:
        existing = _find(session, api_key_id, idempotency_key)
        assert existing is not None  # the conflicting row committed before ours could
        return _replay(session, existing, fingerprint, publish), True
    after_commit(session, lambda: publish(shard))
    return transaction, False


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


def _resolve_wallets(
    session: Session, request: TransactionRequest
) -> tuple[uuid.UUID, uuid.UUID | None, uuid.UUID]:
    """Return ``(source, destination, lane)`` wallet ids, with system wallets filled in.

    A deposit's source and a withdrawal's destination are the currency's system
    wallet. The lane is the debited wallet, except for a deposit: its lane is
    the credited wallet, so a deposit is ordered before the same wallet's later
    debits.
    """
    if (
        request.source_wallet_id is not None
        and request.source_wallet_id == request.destination_wallet_id
    ):
        raise ValidationFailed(
            "source and destination wallets must differ",
            errors=[{"field": "destination_wallet_id", "message": "equals source_wallet_id"}],
        )
    named = {
        field: wallet_id
        for field, wallet_id in (
            ("source_wallet_id", request.source_wallet_id),
            ("destination_wallet_id", request.destination_wallet_id),
        )
        if wallet_id is not None
    }
    # One round trip: the named wallets, the currency's system wallet, and whether
    # the currency is enabled (every enabled currency has a system wallet).
    rows = session.execute(
        select(Wallet.id, Wallet.currency, Wallet.is_system, Currency.enabled)
        .join(Currency, Currency.code == Wallet.currency)
        .where(
            or_(
                Wallet.id.in_(list(named.values())),
                and_(Wallet.is_system, Wallet.currency == request.currency),
            )
        )
    ).all()
    system_id = next(
        (r.id for r in rows if r.is_system and r.currency == request.currency and r.enabled), None
    )
    if system_id is None:
        raise currency_not_enabled(request.currency)
    found = {r.id: r.currency for r in rows}
    for field, wallet_id in named.items():
        if wallet_id not in found:
            raise wallet_not_found(wallet_id)
        if found[wallet_id] != request.currency:
            raise ValidationFailed(
                f"wallet {wallet_id} holds {found[wallet_id]}, not {request.currency}",
                code="currency_mismatch",
                errors=[{"field": field, "message": f"wallet holds {found[wallet_id]}"}],
            )
    match request.type:
        case TransactionType.DEPOSIT:
            assert request.destination_wallet_id is not None
            return system_id, request.destination_wallet_id, request.destination_wallet_id
        case TransactionType.WITHDRAWAL:
            assert request.source_wallet_id is not None
            return request.source_wallet_id, system_id, request.source_wallet_id
        case _:
            assert request.source_wallet_id is not None
            return (
                request.source_wallet_id,
                request.destination_wallet_id,
                request.source_wallet_id,
            )
