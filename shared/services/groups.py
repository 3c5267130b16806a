"""Groups: 2..50 legs applied all together or not at all, as one transaction.

A group is applied in the one apply stream like any other transaction, in
acceptance order (``lane_sequence``): it sees everything accepted before it
in every wallet it touches, and later debits of those wallets see it, so
per-wallet order holds for every wallet a group debits (docs/architecture.md,
invariant 6). Its lane (``lane_wallet_id``) is the first wallet it debits,
system wallets excepted.
Legs may be in different currencies; each currency's legs balance by
construction (one debit and one credit per leg).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.errors import ValidationFailed
from shared.ledger.states import TransactionType
from shared.models import Currency, Transaction, Wallet
from shared.services import scheduled
from shared.services.idempotency import insert_or_replay
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
    request_id: str | None = None,
    scheduled_at: dt.datetime | None = None,
) -> tuple[Transaction, bool]:
    """Record a group as one pending transaction; a drain is sent after commit.

    Args:
        legs: 2..50 legs (the request schema checks the count and each amount).
        request_hash: the request's fingerprint, to detect a reused key.
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
    return insert_or_replay(
        session,
        dict(
            id=uuid.uuid4(),
            type=TransactionType.GROUP.value,
            amount_minor=sum(leg.amount_minor for leg in legs),
            currency=legs[0].currency,
            lane_wallet_id=_lane_of(legs, wallets),
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
    )


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


def _lane_of(legs: Sequence[LegRequest], wallets: Mapping[uuid.UUID, _WalletInfo]) -> uuid.UUID:
    """Return the group's lane: the first wallet it debits, system wallets excepted.

    A group that debits only system wallets (money in from outside) is in the
    lane of the first wallet it credits, as a deposit is.
    """
    for leg in legs:
        if not wallets[leg.source_wallet_id].is_system:
            return leg.source_wallet_id
    return legs[0].destination_wallet_id
