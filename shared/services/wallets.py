"""Wallet operations: create, read, list, freeze, overdraft limits, entries, point-in-time balances."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.ledger.errors import Conflict, NotFound, TallyError, ValidationFailed
from shared.ledger.money import exponent_of, format_amount, parse_amount
from shared.ledger.rules import overdraft_used_minor
from shared.ledger.states import WalletStatus
from shared.models import BalanceSnapshot, Currency, LedgerEntry, Wallet, ledger_entries_all
from shared.pagination import decode_cursor, encode_cursor, newest_first_page
from shared.services import audit


def wallet_not_found(wallet_id: uuid.UUID | str) -> NotFound:
    """Return the ``wallet_not_found`` error for ``wallet_id``."""
    return NotFound(f"wallet {wallet_id} does not exist", code="wallet_not_found")


def ensure_currencies(session: Session, codes: Iterable[str]) -> None:
    """Enable exactly ``codes`` (ISO 4217) and make sure each has its system wallet.

    Currencies no longer configured stay in the table, disabled, because
    wallets and history refer to them. Safe to run concurrently and repeatedly.

    Raises:
        UnknownCurrency: a code is not ISO 4217.
    """
    codes = list(codes)
    for code in codes:
        session.execute(
            insert(Currency)
            .values(code=code, exponent=exponent_of(code), enabled=True)
            .on_conflict_do_update(index_elements=["code"], set_={"enabled": True})
        )
        session.execute(
            insert(Wallet)
            .values(id=uuid.uuid4(), owner_ref=None, currency=code, is_system=True)
            .on_conflict_do_nothing(index_elements=["currency"], index_where=text("is_system"))
        )
    session.execute(update(Currency).where(Currency.code.not_in(codes)).values(enabled=False))


def enabled_currencies(session: Session) -> set[str]:
    """Return the codes of the enabled currencies."""
    return set(session.scalars(select(Currency.code).where(Currency.enabled)))


def currency_not_enabled(currency: str) -> ValidationFailed:
    """Return the ``currency_not_enabled`` error (422, field ``currency``)."""
    return ValidationFailed(
        f"currency {currency!r} is not enabled",
        code="currency_not_enabled",
        errors=[{"field": "currency", "message": f"{currency!r} is not an enabled currency"}],
    )


def require_enabled_currency(session: Session, currency: str) -> None:
    """Raise unless ``currency`` is enabled.

    Raises:
        ValidationFailed: code ``currency_not_enabled``, field ``currency``.
    """
    if currency not in enabled_currencies(session):
        raise currency_not_enabled(currency)


def create_wallet(session: Session, *, owner_ref: str, currency: str) -> Wallet:
    """Create the wallet of ``owner_ref`` in ``currency``.

    Raises:
        ValidationFailed: the currency is not enabled.
        Conflict: ``wallet_exists``; the detail names the existing wallet's id.
    """
    require_enabled_currency(session, currency)
    wallet_id = session.scalar(
        insert(Wallet)
        .values(id=uuid.uuid4(), owner_ref=owner_ref, currency=currency)
        .on_conflict_do_nothing(constraint="wallets_owner_currency_key")
        .returning(Wallet.id)
    )
    if wallet_id is None:
        existing = session.scalar(
            select(Wallet.id).where(Wallet.owner_ref == owner_ref, Wallet.currency == currency)
        )
        raise Conflict(
            f"owner {owner_ref!r} already has a {currency} wallet: {existing}", code="wallet_exists"
        )
    return get_wallet(session, wallet_id)


def get_wallet(session: Session, wallet_id: uuid.UUID) -> Wallet:
    """Return the wallet ``wallet_id``.

    Raises:
        NotFound: ``wallet_not_found``.
    """
    wallet = session.get(Wallet, wallet_id, populate_existing=True)
    if wallet is None:
        raise wallet_not_found(wallet_id)
    return wallet


def list_wallets(
    session: Session, *, owner_ref: str | None, limit: int, cursor: str | None
) -> tuple[Sequence[Wallet], str | None]:
    """Return a page of wallets, newest first, and the cursor of the next page (or None).

    Args:
        owner_ref: only this owner's wallets; None lists all.
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.
    """
    query = select(Wallet)
    if owner_ref is not None:
        query = query.where(Wallet.owner_ref == owner_ref)
    return newest_first_page(
        session, query, created_at=Wallet.created_at, id_=Wallet.id, limit=limit, cursor=cursor
    )


def set_wallet_status(
    session: Session,
    wallet_id: uuid.UUID,
    status: WalletStatus,
    *,
    actor: audit.Actor | None = None,
) -> Wallet:
    """Freeze or unfreeze a wallet; a frozen wallet's new transactions fail ``wallet_frozen``.

    Args:
        actor: the operator; when given, the action is appended to the audit
            log in the same transaction (``wallet.freeze`` or ``wallet.unfreeze``,
            recorded even when the wallet already had that status).

    Raises:
        NotFound: ``wallet_not_found``.
        Conflict: ``system_wallet_immutable`` for a system wallet.
    """
    wallet = session.get(Wallet, wallet_id, with_for_update={"key_share": True})
    if wallet is None:
        raise wallet_not_found(wallet_id)
    if wallet.is_system:
        raise Conflict("a system wallet cannot be frozen", code="system_wallet_immutable")
    if wallet.status != status:
        wallet.status = status.value
        session.flush()
        session.refresh(wallet)
    if actor is not None:
        action = (
            audit.AuditAction.WALLET_FREEZE
            if status is WalletStatus.FROZEN
            else audit.AuditAction.WALLET_UNFREEZE
        )
        audit.record(session, actor, action, [wallet.id], {"status": status.value})
    return wallet


def update_wallet(
    session: Session,
    wallet_id: uuid.UUID,
    *,
    status: WalletStatus | None = None,
    overdraft_limit: str | None = None,
    actor: audit.Actor | None = None,
) -> Wallet:
    """Apply an ops ``PATCH /v1/wallets/{id}``: a new status, a new overdraft limit, or both.

    Both changes commit together or not at all (the caller's transaction).

    Args:
        status: freeze or unfreeze (:func:`set_wallet_status`); None: unchanged.
        overdraft_limit: the new limit as a decimal string in the wallet's
            currency (:func:`set_overdraft_limit`); None: unchanged.
        actor: the operator, for the audit log.

    Raises:
        NotFound, Conflict, ValidationFailed: as the two functions raise.
    """
    wallet = None
    if status is not None:
        wallet = set_wallet_status(session, wallet_id, status, actor=actor)
    if overdraft_limit is not None:
        wallet = set_overdraft_limit(session, wallet_id, overdraft_limit, actor=actor)
    return wallet if wallet is not None else get_wallet(session, wallet_id)


def set_overdraft_limit(
    session: Session,
    wallet_id: uuid.UUID,
    overdraft_limit: str,
    *,
    actor: audit.Actor | None = None,
) -> Wallet:
    """Set how far below zero debits and holds may take the wallet's available balance.

    The wallet row is locked ``FOR NO KEY UPDATE``, the lock the apply path
    takes on every wallet it posts to (``shared.services.apply``), so a change
    and a batch of debits are serialised: the batch posts against the limit
    that was committed before it took the lock, and a lower limit is checked
    against the balances that batch left (docs/architecture.md, invariant 2; the check
    constraints of migration 0012 back both).

    Args:
        overdraft_limit: a decimal string in the wallet's currency (ISO 4217
            minor unit), ``"0"`` or more; ``"0.00"`` removes the overdraft.
        actor: the operator; when given, ``wallet.overdraft_limit`` is appended
            to the audit log in the same transaction, with the previous and the
            new limit in minor units.

    Raises:
        NotFound: ``wallet_not_found``.
        Conflict: ``system_wallet_immutable`` for a system wallet (it has no
            limit); ``overdraft_in_use`` when the limit is below what the
            wallet already uses (``shared.ledger.rules.overdraft_used_minor``).
        ValidationFailed: ``invalid_amount`` (field ``overdraft_limit``).
    """
    wallet = session.get(
        Wallet, wallet_id, with_for_update={"key_share": True}, populate_existing=True
    )
    if wallet is None:
        raise wallet_not_found(wallet_id)
    if wallet.is_system:
        raise Conflict(
            "a system wallet has no overdraft limit: it may go negative",
            code="system_wallet_immutable",
        )
    try:
        limit_minor = parse_amount(overdraft_limit, wallet.currency, allow_zero=True)
    except TallyError as error:
        raise ValidationFailed(
            error.detail,
            code=error.code,
            errors=[{"field": "overdraft_limit", "message": error.detail}],
        ) from None
    used_minor = overdraft_used_minor(wallet.balance_minor, wallet.held_minor)
    if limit_minor < used_minor:
        raise Conflict(
            f"wallet {wallet.id} already uses {format_amount(used_minor, wallet.currency)} "
            f"{wallet.currency} of overdraft; the limit cannot go below that",
            code="overdraft_in_use",
        )
    previous_minor = wallet.overdraft_limit_minor
    if previous_minor != limit_minor:
        wallet.overdraft_limit_minor = limit_minor
        wallet.updated_at = func.now()
        session.flush()
        session.refresh(wallet)
    if actor is not None:
        audit.record(
            session,
            actor,
            audit.AuditAction.WALLET_OVERDRAFT_LIMIT,
            [wallet.id],
            {"overdraft_limit_minor": limit_minor, "previous_minor": previous_minor},
        )
    return wallet


def list_entries(
    session: Session, wallet_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[Sequence[LedgerEntry], str | None]:
    """Return a page of the wallet's ledger entries, newest (highest sequence) first.

    Reads ``ledger_entries_all`` (live and archived entries as one history, one
    keyset on ``sequence``), so archiving changes no page. Rows come back as
    transient ``LedgerEntry`` objects, not attached to the session. The caller
    has checked that the wallet exists.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    entries = ledger_entries_all
    query = (
        select(*(entries.c[c.key] for c in LedgerEntry.__table__.columns))
        .where(entries.c.wallet_id == wallet_id)
        .order_by(entries.c.sequence.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        (sequence,) = decode_cursor(cursor, 1)
        if not sequence.isdigit():
            raise ValidationFailed("cursor is not valid", code="invalid_cursor")
        query = query.where(entries.c.sequence < int(sequence))
    rows = [LedgerEntry(**row) for row in session.execute(query).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].sequence)
    return rows, next_cursor


def balance_as_of(session: Session, wallet_id: uuid.UUID, as_of: dt.datetime) -> int:
    """Return the wallet's balance in minor units after every entry created up to ``as_of``.

    Starts from the nearest balance snapshot of a day before ``as_of``'s UTC
    day, then takes the newest entry (``ledger_entries_all``: live or archived)
    after that snapshot and not after ``as_of``: its ``balance_after`` is the
    answer, else the snapshot's balance, else 0 (no entry yet). Entries'
    ``created_at`` grows with ``sequence`` per wallet (taken while the wallet
    row is locked), so the lookup is an index seek on ``(wallet_id,
    created_at)`` bounded below by the snapshot's day: the cost does not grow
    with the wallet's history. The caller has checked that the wallet exists.
    """
    as_of_day = as_of.astimezone(dt.UTC).date()
    snapshot = session.execute(
        select(BalanceSnapshot.day, BalanceSnapshot.balance_minor, BalanceSnapshot.last_sequence)
        .where(BalanceSnapshot.wallet_id == wallet_id, BalanceSnapshot.day < as_of_day)
        .order_by(BalanceSnapshot.day.desc())
        .limit(1)
    ).one_or_none()
    entries = ledger_entries_all
    query = select(entries.c.balance_after_minor).where(
        entries.c.wallet_id == wallet_id, entries.c.created_at <= as_of
    )
    if snapshot is not None:
        # The snapshot's last entry was created on its day; later ones not before it.
        day_start = dt.datetime.combine(snapshot.day, dt.time(), tzinfo=dt.UTC)
        query = query.where(
            entries.c.sequence > snapshot.last_sequence, entries.c.created_at >= day_start
        )
    balance = session.scalar(
        query.order_by(entries.c.created_at.desc(), entries.c.sequence.desc()).limit(1)
    )
    if balance is not None:
        return int(balance)
    return 0 if snapshot is None else int(snapshot.balance_minor)
