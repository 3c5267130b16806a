"""Groups: 2..50 legs applied all together or not at all, as one transaction.

A group debits possibly many wallets, so it has a lane for each wallet it
debits (system wallets excepted: their order does not matter, they may go
negative): the first in ``transactions.lane_wallet_id``, the others in
``group_lanes`` while it is pending. The apply path picks a group only when
nothing older is pending in any of its lanes, and later debits of those
wallets wait behind it (``shared.services.processor.claim_batch``), so
per-wallet order holds for every wallet a group debits (docs/architecture.md, invariant 6).
Legs may be in different currencies; each currency's legs balance by
construction (one debit and one credit per leg).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.ledger.errors import ValidationFailed
from shared.ledger.states import TransactionType
from shared.models import Currency, GroupLane, Transaction, Wallet
from shared.services import scheduled
from shared.services.idempotency import Publish, insert_or_replay
from shared.services.processor import shard_of
from shared.services.wallets import currency_not_enabled, wallet_not_found


@dataclasses.dataclass(frozen=True, slots=True)
class LegRequest:
    """One validated leg of a group: ``amount_minor`` of ``currency`` from source to destination."""

    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount_minor: int
    currency: str


@dataclasses.dataclass(frozen=True, slots=True)
class _WalletInfo:
    currency: str
    is_system: bool
    enabled: bool


def submit_group(
    session: Session,
    legs: Sequence[LegRequest],
    *,
    description: str | None,
    metadata: Mapping[str, str],
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_hash: str,
    shard_count: int,
    publish: Publish,
    request_id: str | None = None,
    scheduled_at: dt.datetime | None = None,
) -> tuple[Transaction, bool]:
    """Record a group as one pending transaction; publish the shards of its lanes after commit.

    Args:
        legs: 2..50 legs (the request schema checks the count and each amount).
        request_hash: the request's fingerprint, to detect a reused key.
        shard_count: ``TALLY_SHARD_COUNT``.
        request_id: the HTTP request's ``X-Request-Id``, stored with the row.
        scheduled_at: when the whole group becomes due; a future one records
            it ``scheduled`` (``shared.services.scheduled.initial_state``).

    Returns:
        ``(transaction, replayed)`` as ``shared.services.intake.submit_transaction``.

    Raises:
        NotFound: ``wallet_not_found`` for a leg's wallet.
        ValidationFailed: a leg's currency not enabled, or a wallet of another
            currency (``currency_mismatch``), naming ``legs.<i>.<field>``.
        IdempotencyKeyReused: the key was used with a different request.
    """
    wallets = _load_wallets(session, legs)
    _check_legs(legs, wallets)
    status, scheduled_at = scheduled.initial_state(session, scheduled_at)
    lanes = _lanes_of(legs, wallets)
    transaction_id = uuid.uuid4()
    transaction, replayed = insert_or_replay(
        session,
        dict(
            id=transaction_id,
            type=TransactionType.GROUP.value,
            amount_minor=sum(leg.amount_minor for leg in legs),
            currency=legs[0].currency,
            lane_wallet_id=lanes[0],
            shard=shard_of(lanes[0], shard_count),
            legs=[
                {
                    "source_wallet_id": str(leg.source_wallet_id),
                    "destination_wallet_id": str(leg.destination_wallet_id),
                    "amount_minor": leg.amount_minor,
                    "currency": leg.currency,
                }
                for leg in legs
            ],
            description=description,
            metadata_=dict(metadata),
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            request_id=request_id,
            scheduled_at=scheduled_at,
            status=status,
        ),
        publish=publish,
    )
    if replayed:
        return transaction, True
    shards = sorted({shard_of(lane, shard_count) for lane in lanes})
    if len(lanes) > 1:
        session.execute(
            insert(GroupLane),
            [
                {
                    "transaction_id": transaction_id,
                    "lane_wallet_id": lane,
                    "shard": shard_of(lane, shard_count),
                }
                for lane in lanes[1:]
            ],
        )
    for shard in shards:
        after_commit(session, lambda shard=shard: publish(shard))  # type: ignore[misc]
    return transaction, False


def reopen_lanes(session: Session, group: Transaction, *, shard_count: int) -> list[int]:
    """Put a group that an ops retry reopened back into its extra lanes; return all its shards.

    Its first lane is still ``group.lane_wallet_id``; the others were released
    when it failed.
    """
    legs = [
        LegRequest(
            uuid.UUID(leg["source_wallet_id"]),
            uuid.UUID(leg["destination_wallet_id"]),
            int(leg["amount_minor"]),
            leg["currency"],
        )
        for leg in group.legs or ()
    ]
    lanes = [
        lane
        for lane in _lanes_of(legs, _load_wallets(session, legs))
        if lane != group.lane_wallet_id
    ]
    if lanes:
        session.execute(
            pg_insert(GroupLane)
            .values(
                [
                    {
                        "transaction_id": group.id,
                        "lane_wallet_id": lane,
                        "shard": shard_of(lane, shard_count),
                    }
                    for lane in lanes
                ]
            )
            .on_conflict_do_nothing()
        )
    return sorted({shard_of(lane, shard_count) for lane in [group.lane_wallet_id, *lanes]})


def _load_wallets(session: Session, legs: Sequence[LegRequest]) -> dict[uuid.UUID, _WalletInfo]:
    """Return every wallet the legs name, with its currency's ``enabled`` flag (one query)."""
    ids = {leg.source_wallet_id for leg in legs} | {leg.destination_wallet_id for leg in legs}
    rows = session.execute(
        select(Wallet.id, Wallet.currency, Wallet.is_system, Currency.enabled)
        .join(Currency, Currency.code == Wallet.currency)
        .where(Wallet.id.in_(sorted(ids)))
    ).all()
    return {row.id: _WalletInfo(row.currency, row.is_system, row.enabled) for row in rows}


def _check_legs(legs: Sequence[LegRequest], wallets: Mapping[uuid.UUID, _WalletInfo]) -> None:
    """Raise the first problem of the legs against the wallets they name.

    Raises:
        NotFound: ``wallet_not_found``.
        ValidationFailed: ``currency_not_enabled`` or ``currency_mismatch``.
    """
    for index, leg in enumerate(legs):
        for field, wallet_id in (
            ("source_wallet_id", leg.source_wallet_id),
            ("destination_wallet_id", leg.destination_wallet_id),
        ):
            wallet = wallets.get(wallet_id)
            if wallet is None:
                raise wallet_not_found(wallet_id)
            if wallet.currency != leg.currency:
                raise ValidationFailed(
                    f"leg {index}: wallet {wallet_id} holds {wallet.currency}, not {leg.currency}",
                    code="currency_mismatch",
                    errors=[
                        {
                            "field": f"legs.{index}.{field}",
                            "message": f"wallet holds {wallet.currency}",
                        }
                    ],
                )
            if not wallet.enabled:
                error = currency_not_enabled(leg.currency)
                error.errors = [{"field": f"legs.{index}.currency", "message": error.detail}]
                raise error


def _lanes_of(
    legs: Sequence[LegRequest], wallets: Mapping[uuid.UUID, _WalletInfo]
) -> list[uuid.UUID]:
    """Return the group's lanes: the wallets it debits, system wallets excepted, in leg order.

    A group that debits only system wallets (money in from outside) is ordered
    in the lane of the first wallet it credits, as a deposit is.
    """
    debited = [leg.source_wallet_id for leg in legs if not wallets[leg.source_wallet_id].is_system]
    lanes = list(dict.fromkeys(debited))
    return lanes or [legs[0].destination_wallet_id]
