"""Reversals at intake: record a reversal of a completed transaction as pending.

A reversal is a transaction of its own (type ``reversal``) that names its
original in ``reverses_id`` and moves money back along it: from the
original's destination to its source (a deposit's source and a withdrawal's
destination are the currency's system wallet), in the lane of the wallet it
debits, applied by the stream in acceptance order like every transaction
(docs/api-conventions.md, "Reversals"). Whether it may still move its amount is
decided when it is applied (``shared.ledger.rules``, ``reversal_exceeds_amount``),
against the original's ``reversed_minor`` as the batch has left it, so
reversals that race never add up to more than the original. What intake
refuses here is only what is already certain.
"""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.errors import Conflict, TallyError, ValidationFailed
from shared.ledger.money import parse_amount_field
from shared.ledger.states import REVERSIBLE_TYPES, TransactionStatus, TransactionType
from shared.models import Transaction, TransactionArchive
from shared.services.idempotency import fingerprint, insert_or_replay, replay_if_recorded
from shared.services.transactions import transaction_not_found


@dataclasses.dataclass(frozen=True, slots=True)
class ReversalRequest:
    """A validated ``POST /v1/transactions/{id}/reverse``.

    Attributes:
        original_id: the transaction to reverse.
        amount: the amount as the client wrote it, a decimal string in the
            original's currency (parsed here, where the currency is known);
            None: what is left to reverse.
        description: free text, at most 500 characters.
        metadata: flat string map, at most 50 keys.
    """

    original_id: uuid.UUID
    amount: str | None = None
    description: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


def not_reversible(detail: str) -> Conflict:
    """Return the ``not_reversible`` error (409)."""
    return Conflict(detail, code="not_reversible")


def submit_reversal(
    session: Session,
    request: ReversalRequest,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_id: str | None = None,
) -> tuple[Transaction, bool]:
    """Record a reversal of a completed transaction as pending; a drain is sent after commit.

    The original is read ``FOR KEY SHARE``, so the archive job (which skips
    locked rows and originals with a pending reversal) cannot move it while
    the reversal is being recorded. A refused request whose key was already
    used replays that key's transaction instead: a reversal accepted before
    answers as it is now, even once nothing is left to reverse.

    Args:
        request: the validated request.
        api_key_id: the submitting key; idempotency keys are scoped to it.
        idempotency_key: the client's ``Idempotency-Key``.
        request_id: the HTTP request's ``X-Request-Id``, stored with the row.

    Returns:
        ``(transaction, replayed)``: the reversal, and whether the key replayed it.

    Raises:
        NotFound: ``transaction_not_found``.
        Conflict: ``not_reversible``: the original is not ``completed``, is of a
            type that cannot be reversed (hold, void, expiry, group, reversal), is
            archived, or is already reversed in full.
        ValidationFailed: ``invalid_amount`` (the amount does not fit the
            original's currency), ``reversal_exceeds_amount`` (more than its
            completed reversals left of it); both name ``amount``.
        IdempotencyKeyReused: the key was used with a different request.
    """
    original = session.scalar(
        select(Transaction)
        .where(Transaction.id == request.original_id)
        .with_for_update(read=True, key_share=True)
    )
    # An archived original is refused, but its amount is read as the live one
    # was, so that a replay of a reversal accepted before it moved still replays.
    found = original or session.get(TransactionArchive, request.original_id)
    if found is None:
        raise transaction_not_found(request.original_id)
    requested_minor = None
    if request.amount is not None:
        requested_minor = parse_amount_field(request.amount, found.currency)
    refusal: TallyError | None
    if original is None:
        refusal = not_reversible(f"transaction {request.original_id} is archived")
    else:
        refusal = _refusal(original, requested_minor)
    request_hash = fingerprint(
        ["reversal", request.original_id, requested_minor, request.description, request.metadata]
    )
    if refusal is not None:
        earlier = replay_if_recorded(
            session,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        if earlier is not None:
            return earlier, True
        raise refusal
    assert original is not None and original.destination_wallet_id is not None
    debited = original.destination_wallet_id
    inserted, replayed = insert_or_replay(
        session,
        dict(
            id=uuid.uuid4(),
            type=TransactionType.REVERSAL.value,
            reverses_id=original.id,
            amount_minor=requested_minor or original.amount_minor - original.reversed_minor,
            currency=original.currency,
            source_wallet_id=debited,
            destination_wallet_id=original.source_wallet_id,
            lane_wallet_id=debited,
            description=request.description,
            metadata_=request.metadata,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            request_id=request_id,
        ),
    )
    return inserted, replayed


def _refusal(original: Transaction, requested_minor: int | None) -> TallyError | None:
    """Return why ``original`` may not be reversed by ``requested_minor`` (None: all left), or None."""
    if original.type not in REVERSIBLE_TYPES:
        return not_reversible(f"a {original.type} cannot be reversed")
    if original.status != TransactionStatus.COMPLETED:
        return not_reversible(f"transaction {original.id} is {original.status}, not completed")
    left_minor = original.amount_minor - original.reversed_minor
    if left_minor == 0:
        return not_reversible(f"transaction {original.id} is already reversed in full")
    if requested_minor is not None and requested_minor > left_minor:
        return ValidationFailed(
            f"reversal of {requested_minor} minor units exceeds the {left_minor} left to reverse",
            code="reversal_exceeds_amount",
            errors=[{"field": "amount", "message": "exceeds what is left to reverse"}],
        )
    return None
