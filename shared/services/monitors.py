"""Balance monitors: create, read, list, delete, and their evaluation in the changing transaction.

docs/api-conventions.md, "Balance monitors". A monitor is evaluated in the
database transaction that changes its wallet and when it is created, by one
statement (:func:`evaluate_monitors`) that flips every monitor of the given
wallets whose condition no longer matches its state and appends its event
(``balance_monitor.triggered`` or ``.cleared``) with the event's deliveries
through the outbox (``shared.services.events``). The apply path calls it once
per batch, after the batch's writes, for the wallets the batch changed, so a
batch of a thousand transactions costs one statement more, not a thousand.
Every change of a wallet's balance or held amount is an applied transaction
(holds, captures, voids and expiries included), so the apply path is the
only caller besides creation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.ledger.errors import NotFound, TallyError, ValidationFailed
from shared.ledger.monitors import COMPARISONS, MonitorField, MonitorOperator, parse_threshold
from shared.models import BalanceMonitor, Wallet
from shared.pagination import newest_first_page
from shared.services import events
from shared.services.wallets import wallet_not_found


def condition_sql(monitor: str = "m", wallet: str = "w") -> str:
    """Return the SQL of a monitor's condition over its wallet's row (``shared.ledger.monitors``).

    Built from ``COMPARISONS``, the table the pure rule uses, so the apply
    path's statement and ``condition_holds`` cannot disagree.
    """
    watched = (
        f"CASE {monitor}.field WHEN '{MonitorField.BALANCE.value}' THEN {wallet}.balance_minor "
        f"ELSE {wallet}.balance_minor - {wallet}.held_minor END"
    )
    cases = " ".join(
        f"WHEN '{op.value}' THEN ({watched}) {symbol} {monitor}.value_minor"
        for op, (_, symbol) in COMPARISONS.items()
    )
    return f"CASE {monitor}.operator {cases} END"


#: Flips the monitors of the given wallets whose condition no longer matches their
#: state, and appends one event per flip naming the transaction that crossed it
#: (the batch's last one on that wallet; NULL at creation). ``ev`` feeds the
#: outbox's deliveries (``events.events_statement``): one round trip in all.
_EVALUATE = events.events_statement(
    f"""
WITH crossed AS (
    SELECT * FROM unnest(CAST(:wallet_ids AS uuid[]), CAST(:transaction_ids AS uuid[]))
        AS c(wallet_id, transaction_id)
), flipped AS (
    UPDATE balance_monitors m
    SET state = CASE m.state WHEN 'clear' THEN 'triggered' ELSE 'clear' END,
        triggered_at = CASE m.state WHEN 'clear' THEN clock_timestamp() END,
        updated_at = clock_timestamp()
    FROM wallets w
    WHERE m.wallet_id = ANY(CAST(:wallet_ids AS uuid[])) AND w.id = m.wallet_id
      AND (m.state = 'triggered') <> ({condition_sql()})
    RETURNING m.id, m.wallet_id, m.field, m.operator, m.value_minor, m.description, m.state,
              m.triggered_at, m.created_at, m.api_key_id, w.currency, w.balance_minor,
              w.held_minor
), ev AS (
    INSERT INTO events (id, type, balance_monitor_id, transaction_id, api_key_id, status,
                        snapshot, created_at)
    SELECT uuidv7(),
           CASE f.state WHEN 'triggered' THEN 'balance_monitor.triggered'
                ELSE 'balance_monitor.cleared' END,
           f.id, c.transaction_id, f.api_key_id, f.state,
           jsonb_build_object(
               'id', f.id, 'wallet_id', f.wallet_id, 'field', f.field,
               'operator', f.operator, 'value_minor', f.value_minor,
               'description', f.description, 'state', f.state,
               'triggered_at', f.triggered_at, 'created_at', f.created_at,
               'currency', f.currency, 'balance_minor', f.balance_minor,
               'held_minor', f.held_minor),
           clock_timestamp()
    FROM flipped f JOIN crossed c ON c.wallet_id = f.wallet_id
    RETURNING id, type
)"""
)


def crossing_transactions(
    changes: Iterable[Mapping[str, Any]], order: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """Return, for each wallet that ``changes`` touch, the last transaction (in ``order``) that did.

    Args:
        changes: rows with ``wallet_id`` and ``transaction_id`` (a batch's
            ledger entries and held-amount changes).
        order: the batch's transaction ids in acceptance order.
    """
    position = {transaction_id: index for index, transaction_id in enumerate(order)}
    last: dict[uuid.UUID, tuple[int, uuid.UUID]] = {}
    for change in changes:
        wallet_id, transaction_id = change["wallet_id"], change["transaction_id"]
        index = position.get(transaction_id, -1)
        if wallet_id not in last or index >= last[wallet_id][0]:
            last[wallet_id] = (index, transaction_id)
    return {wallet_id: transaction_id for wallet_id, (_, transaction_id) in last.items()}


def evaluate_monitors(
    session: Session, crossed_by: Mapping[uuid.UUID, uuid.UUID | None]
) -> list[str]:
    """Flip the monitors of these wallets whose condition changed; append their events.

    Call it in the database transaction that changed the wallets, after their
    balances are written. One statement whatever the number of wallets,
    monitors and flips.

    Args:
        crossed_by: the wallets to evaluate, each with the transaction that
            changed it last (None when no transaction did: at a monitor's creation).

    Returns:
        The types of the events appended (``balance_monitor.triggered`` or ``.cleared``).
    """
    if not crossed_by:
        return []
    return events.record_events(
        session,
        _EVALUATE,
        {"wallet_ids": list(crossed_by), "transaction_ids": list(crossed_by.values())},
    )


def balance_monitor_not_found(monitor_id: uuid.UUID | str) -> NotFound:
    """Return the ``balance_monitor_not_found`` error (404)."""
    return NotFound(
        f"balance monitor {monitor_id} does not exist", code="balance_monitor_not_found"
    )


def create_monitor(
    session: Session,
    *,
    wallet_id: uuid.UUID,
    field: MonitorField,
    operator: MonitorOperator,
    value: str,
    description: str | None,
    api_key_id: uuid.UUID,
) -> tuple[BalanceMonitor, str]:
    """Create a monitor on ``wallet_id`` and evaluate it at once; return it and the wallet's currency.

    The wallet's row is read ``FOR SHARE``: an apply batch changing it either
    commits first (and the monitor sees its balances) or waits for this
    commit (and evaluates the monitor with the rest). A condition that holds
    already makes the monitor ``triggered`` with its event, whose
    ``transaction_id`` is null.

    Args:
        value: the threshold as the client wrote it, a decimal string in the
            wallet's currency, zero or signed (``shared.ledger.monitors.parse_threshold``).

    Raises:
        NotFound: ``wallet_not_found``.
        ValidationFailed: ``value`` does not fit the wallet's currency (field ``value``).
    """
    wallet = session.get(Wallet, wallet_id, with_for_update={"read": True})
    if wallet is None:
        raise wallet_not_found(wallet_id)
    try:
        value_minor = parse_threshold(value, wallet.currency)
    except TallyError as error:
        raise ValidationFailed(
            error.detail, code=error.code, errors=[{"field": "value", "message": error.detail}]
        ) from None
    monitor = BalanceMonitor(
        id=uuid.uuid4(),
        wallet_id=wallet_id,
        field=field.value,
        operator=operator.value,
        value_minor=value_minor,
        description=description,
        api_key_id=api_key_id,
    )
    session.add(monitor)
    session.flush()
    evaluate_monitors(session, {wallet_id: None})
    session.refresh(monitor)
    return monitor, wallet.currency


def get_monitor(session: Session, monitor_id: uuid.UUID) -> tuple[BalanceMonitor, str]:
    """Return a monitor and its wallet's currency.

    Raises:
        NotFound: ``balance_monitor_not_found``.
    """
    row = session.execute(
        select(BalanceMonitor, Wallet.currency)
        .join(Wallet, Wallet.id == BalanceMonitor.wallet_id)
        .where(BalanceMonitor.id == monitor_id)
    ).one_or_none()
    if row is None:
        raise balance_monitor_not_found(monitor_id)
    return row[0], row[1]


def list_monitors(
    session: Session, *, wallet_id: uuid.UUID | None, limit: int, cursor: str | None
) -> tuple[list[tuple[BalanceMonitor, str]], str | None]:
    """Return a page of monitors (each with its wallet's currency), newest first, and the next cursor.

    Args:
        wallet_id: only this wallet's monitors when given.
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = select(BalanceMonitor)
    if wallet_id is not None:
        query = query.where(BalanceMonitor.wallet_id == wallet_id)
    rows, next_cursor = newest_first_page(
        session,
        query,
        created_at=BalanceMonitor.created_at,
        id_=BalanceMonitor.id,
        limit=limit,
        cursor=cursor,
    )
    wallet_ids = {m.wallet_id for m in rows}
    currencies: dict[uuid.UUID, str] = {}
    if wallet_ids:
        found = session.execute(select(Wallet.id, Wallet.currency).where(Wallet.id.in_(wallet_ids)))
        currencies = {row.id: row.currency for row in found}
    return [(m, currencies[m.wallet_id]) for m in rows], next_cursor


def delete_monitor(session: Session, monitor_id: uuid.UUID) -> None:
    """Delete a monitor; its events stay, each with the monitor as it was.

    Raises:
        NotFound: ``balance_monitor_not_found``.
    """
    deleted = session.scalar(
        delete(BalanceMonitor).where(BalanceMonitor.id == monitor_id).returning(BalanceMonitor.id)
    )
    if deleted is None:
        raise balance_monitor_not_found(monitor_id)
