"""The apply transaction: post a claimed batch to the ledger in one commit.

The caller (``shared.services.processor``) holds the stream's lock and has
recorded its claim; the status update counts the attempt and ends the claim.
Here the batch's rows are re-read and locked, every wallet they touch is
locked in sorted id order, the pure posting rules
(``shared.ledger.rules.post``) run in acceptance order, and the entries,
hold entries, balances and statuses are written together (docs/architecture.md,
invariants 1-5), with one event per status change and its webhook deliveries
(``shared.services.events``: the transactional outbox).

A capture, void or expiry ends the hold it names: the hold's row is locked with
the batch, and its status is tracked through the batch, so a hold applied, then
captured, then voided in one batch resolves once (the void fails
``hold_not_open``).

A reversal moves money back along its original: the original's row is locked
with the batch, and its ``reversed_minor`` is tracked through the batch and
written in the same commit, so reversals of one transaction, racing or not,
never complete for more than its amount (``reversal_exceeds_amount``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, insert, text
from sqlalchemy.orm import Session

from shared.ledger.rules import (
    Applied,
    Leg,
    Posting,
    Rejection,
    Release,
    Reversal,
    WalletState,
    post,
    wallet_ids_of,
)
from shared.ledger.states import (
    HOLD_OUTCOMES,
    TransactionStatus,
    TransactionType,
    WalletStatus,
    check_transition,
)
from shared.models import HoldEntry
from shared.services.events import record_transaction_events
from shared.services.monitors import crossing_transactions, evaluate_monitors


@dataclasses.dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one apply transaction did.

    Attributes:
        statuses: how many transactions reached each status (``{"completed": 7}``).
        settled_ids: the transactions that left ``pending``.
        outcomes: how many reached each ``(type, status, failure_code)``; the
            code is ``"none"`` unless failed (the labels of ``tally_transactions_settled_total``).
        settle_seconds: for each one that reached a terminal status, the seconds
            from its ``created_at`` to its ``completed_at``.
        request_ids: the ``X-Request-Id`` each was submitted with, by id (None if unknown).
    """

    statuses: Counter[str]
    settled_ids: tuple[uuid.UUID, ...] = ()
    outcomes: Counter[tuple[str, str, str]] = dataclasses.field(default_factory=Counter)
    settle_seconds: tuple[float, ...] = ()
    request_ids: Mapping[uuid.UUID, str | None] = dataclasses.field(default_factory=dict)


#: What the apply path reads of a transaction: plain rows, not ORM objects, whose
#: hydration showed in the worker's profile; rows have the same attribute names.
_APPLY_COLUMNS = (
    "id, type, currency, amount_minor, source_wallet_id, destination_wallet_id, hold_id, "
    "reverses_id, legs, created_at, request_id"
)

#: The batch's transactions, locked (``FOR NO KEY UPDATE``) in id order. The
#: apply's locking reads are text, not ORM selects: built, compiled from the
#: cache and their rows processed by SQLAlchemy, the transactions' and the
#: wallets' each cost 600-700 µs of the worker's CPU per batch more
#: (docs/benchmarks.md, series 12).
_READ_SQL = text(
    f"SELECT {_APPLY_COLUMNS}, status, lane_sequence FROM transactions"
    " WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)

#: The wallets the batch posts to, locked in id order (see :func:`_lock_wallets`).
_LOCK_WALLETS_SQL = text(
    "SELECT id, currency, balance_minor, held_minor, status, is_system, last_sequence,"
    " overdraft_limit_minor FROM wallets"
    " WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)

#: The holds the batch's captures, voids and expiries name, locked in id order.
_LOCK_HOLDS_SQL = text(
    "SELECT id, source_wallet_id, amount_minor, status FROM transactions"
    " WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)

#: The originals the batch's reversals name, locked in id order.
_LOCK_ORIGINALS_SQL = text(
    "SELECT id, amount_minor, reversed_minor FROM transactions"
    " WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE"
)

#: A transaction as the apply path reads it: a row with ``_APPLY_COLUMNS``' names.
Pending = Row[Any]


@dataclasses.dataclass(slots=True)
class _Hold:
    """A hold as the batch sees it: its wallet, amount and status so far."""

    wallet_id: uuid.UUID
    amount_minor: int
    status: TransactionStatus


def posting_of(
    transaction: Pending,
    holds: Mapping[uuid.UUID, _Hold],
    originals: Mapping[uuid.UUID, Reversal] | None = None,
) -> Posting:
    """Return the posting a stored transaction asks for (its legs, in minor units).

    Args:
        transaction: the pending transaction (a row of ``_APPLY_COLUMNS``).
        holds: the holds named by the batch's captures, voids and expiries, with
            their status as of this point of the batch.
        originals: the transactions the batch's reversals name, with what their
            completed reversals moved back as of this point of the batch.
    """
    transaction_type = TransactionType(transaction.type)
    currency = transaction.currency
    if transaction_type is TransactionType.GROUP:
        legs = tuple(
            Leg(
                uuid.UUID(leg["source_wallet_id"]),
                uuid.UUID(leg["destination_wallet_id"]),
                int(leg["amount_minor"]),
                leg["currency"],
            )
            for leg in transaction.legs or ()
        )
        return Posting(transaction_type, currency, legs)
    if transaction_type in HOLD_OUTCOMES:
        assert transaction.hold_id is not None and transaction.source_wallet_id is not None
        hold = holds.get(transaction.hold_id) or _Hold(
            transaction.source_wallet_id, transaction.amount_minor, TransactionStatus.FAILED
        )  # a hold that is gone is not open
        release = Release(hold.wallet_id, hold.amount_minor, hold.status is TransactionStatus.HELD)
        capture_legs: tuple[Leg, ...] = ()
        if transaction_type is TransactionType.CAPTURE:
            assert transaction.destination_wallet_id is not None
            capture_legs = (
                Leg(hold.wallet_id, transaction.destination_wallet_id, transaction.amount_minor),
            )
        return Posting(transaction_type, currency, capture_legs, release)
    source = transaction.source_wallet_id
    assert source is not None
    destination = transaction.destination_wallet_id or source
    reversal = None
    if transaction_type is TransactionType.REVERSAL:
        # An original that is gone (archived) has nothing left to reverse.
        amount = transaction.amount_minor
        reversal = (originals or {}).get(transaction.reverses_id) or Reversal(amount, amount)
    return Posting(
        transaction_type,
        currency,
        (Leg(source, destination, transaction.amount_minor),),
        reversal=reversal,
    )


def apply_batch(session: Session, transaction_ids: Sequence[uuid.UUID]) -> ApplyResult:
    """Apply the claimed transactions that are still pending, in acceptance order.

    The caller holds the stream's lock; rows are re-read and locked anyway, so a
    transaction applied by an earlier, unacknowledged attempt is not applied twice.

    Returns:
        The statuses reached and the settled ids; empty for a duplicate delivery.
    """
    # By primary key alone, in id order, and the status judged here: with
    # ``status = 'pending'`` in the query, PostgreSQL would scan the partial
    # index of pending transactions, whose statistics say it is nearly empty,
    # and so read the whole backlog for every batch. Locking a row that turns
    # out settled (applied by an earlier, unacknowledged attempt) is harmless.
    rows = session.execute(_READ_SQL, {"ids": list(transaction_ids)}).all()
    transactions = sorted(
        (row for row in rows if row.status == TransactionStatus.PENDING),
        key=lambda row: row.lane_sequence,
    )
    if not transactions:
        return ApplyResult(Counter())  # a duplicate delivery: someone applied them already
    holds = _lock_holds(session, transactions)
    originals = _lock_originals(session, transactions)
    originals_before = dict(originals)
    postings = [posting_of(transaction, holds, originals) for transaction in transactions]
    wallet_ids: set[uuid.UUID] = set()
    for first in postings:
        wallet_ids |= wallet_ids_of(first)
    wallets = _lock_wallets(session, wallet_ids)
    before = {wid: (w.balance_minor, w.held_minor, w.last_sequence) for wid, w in wallets.items()}

    now = dt.datetime.now(dt.UTC)
    entry_rows: list[dict[str, object]] = []
    hold_rows: list[dict[str, object]] = []
    status_rows: dict[uuid.UUID, dict[str, object]] = {}
    held_first: list[uuid.UUID] = []  # holds applied, then ended, in this batch
    reversed_: list[tuple[uuid.UUID, int]] = []  # (original, its reversed_minor after)
    for transaction, posting in zip(transactions, postings, strict=True):
        if transaction.hold_id is not None or transaction.reverses_id is not None:
            # Built again: an earlier posting of the batch may have changed its
            # hold or its original.
            posting = posting_of(transaction, holds, originals)
        result = post(posting, wallets)  # updates ``wallets`` in place on success
        if isinstance(result, Applied):
            entry_rows.extend(_entry_rows(transaction, result))
            hold_rows.extend(_hold_rows(transaction, result))
            if transaction.hold_id in status_rows:  # its hold was applied in this batch
                held_first.append(transaction.hold_id)
            _end_hold(transaction, holds, status_rows, now)
            if posting.reversal is not None:
                reversed_.append(_add_reversed(transaction, originals))
        status_rows[transaction.id] = _status_row(transaction, result, now)
        if transaction.type == TransactionType.HOLD and isinstance(result, Applied):
            holds[transaction.id] = _Hold(
                transaction.source_wallet_id,
                transaction.amount_minor,
                TransactionStatus.HELD,
            )

    changed = [
        w
        for wid, w in wallets.items()
        if before[wid] != (w.balance_minor, w.held_minor, w.last_sequence)
    ]
    _write_wallets(session, changed, now)
    _write_entries(session, entry_rows)
    if hold_rows:
        session.execute(insert(HoldEntry), hold_rows)
    _write_statuses(session, list(status_rows.values()))
    _write_reversed(session, originals, originals_before, now)
    # The outbox: one event per status change, a hold's end included, in this commit.
    record_transaction_events(
        session,
        {transaction_id: str(row["status"]) for transaction_id, row in status_rows.items()},
        held_first=held_first,
        reversed_=reversed_,
    )
    # Balance monitors of the wallets the batch changed: one statement for the batch.
    evaluate_monitors(
        session, crossing_transactions([*entry_rows, *hold_rows], [t.id for t in transactions])
    )
    settled = tuple(t.id for t in transactions)
    # Counted once per batch here, so the caller updates each metric once per batch.
    outcomes = Counter(
        (t.type, str(status_rows[t.id]["status"]), str(status_rows[t.id]["failure_code"] or "none"))
        for t in transactions
    )
    return ApplyResult(
        Counter(str(status_rows[t]["status"]) for t in settled),
        settled,
        outcomes=outcomes,
        settle_seconds=tuple(
            (now - t.created_at).total_seconds()
            for t in transactions
            if status_rows[t.id]["completed_at"] is not None
        ),
        request_ids={t.id: t.request_id for t in transactions},
    )


#: One statement per batch for each kind of write: the rows travel as arrays
#: (``unnest``), so a batch of a thousand costs what a batch of one does in
#: round trips and statement overhead; an executemany would send one
#: statement per row.
_WALLETS_SQL = text(
    """
UPDATE wallets w SET balance_minor = v.balance_minor, held_minor = v.held_minor,
    last_sequence = v.last_sequence, updated_at = CAST(:now AS timestamptz)
FROM unnest(CAST(:ids AS uuid[]), CAST(:balances AS bigint[]), CAST(:held AS bigint[]),
            CAST(:sequences AS bigint[])) AS v(id, balance_minor, held_minor, last_sequence)
WHERE w.id = v.id
"""
)

_ENTRIES_SQL = text(
    """
INSERT INTO ledger_entries (wallet_id, transaction_id, transaction_type, direction,
    amount_minor, balance_after_minor, sequence)
SELECT * FROM unnest(CAST(:wallet_ids AS uuid[]), CAST(:transaction_ids AS uuid[]),
    CAST(:types AS text[]), CAST(:directions AS text[]), CAST(:amounts AS bigint[]),
    CAST(:balances_after AS bigint[]), CAST(:sequences AS bigint[]))
"""
)

#: The status update also counts the finished attempt and ends the stream's
#: claim in flight (``apply_claims``, written by ``processor.claim_batch``) in
#: the same statement: no write per transaction at the claim, no round trip more here.
_STATUSES_SQL = text(
    """
WITH claim_ended AS (DELETE FROM apply_claims)
UPDATE transactions t SET status = v.status, failure_code = v.failure_code,
    failure_message = v.failure_message, updated_at = v.updated_at,
    completed_at = v.completed_at, attempts = t.attempts + v.attempts_added
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:codes AS text[]),
            CAST(:messages AS text[]), CAST(:updated AS timestamptz[]),
            CAST(:completed AS timestamptz[]), CAST(:attempts_added AS integer[]))
    AS v(id, status, failure_code, failure_message, updated_at, completed_at, attempts_added)
WHERE t.id = v.id
"""
)


def _write_wallets(session: Session, wallets: Sequence[WalletState], now: dt.datetime) -> None:
    """Store the balances, held amounts and last sequences of the changed wallets: one statement."""
    if not wallets:
        return
    session.execute(
        _WALLETS_SQL,
        {
            "now": now,
            "ids": [w.id for w in wallets],
            "balances": [w.balance_minor for w in wallets],
            "held": [w.held_minor for w in wallets],
            "sequences": [w.last_sequence for w in wallets],
        },
    )


def _write_entries(session: Session, rows: Sequence[Mapping[str, object]]) -> None:
    """Append the batch's ledger entries, in posting order: one statement."""
    if not rows:
        return
    session.execute(
        _ENTRIES_SQL,
        {
            "wallet_ids": [r["wallet_id"] for r in rows],
            "transaction_ids": [r["transaction_id"] for r in rows],
            "types": [r["transaction_type"] for r in rows],
            "directions": [r["direction"] for r in rows],
            "amounts": [r["amount_minor"] for r in rows],
            "balances_after": [r["balance_after_minor"] for r in rows],
            "sequences": [r["sequence"] for r in rows],
        },
    )


def _write_statuses(session: Session, rows: Sequence[Mapping[str, object]]) -> None:
    """Store each settled transaction's status, failure, times and finished attempt: one statement.

    A row's ``attempts_added`` is 1 for a transaction of the batch (this
    attempt at it finished) and 0 for a hold that only a capture, void or
    expiry of the batch ended.
    """
    session.execute(
        _STATUSES_SQL,
        {
            "ids": [r["id"] for r in rows],
            "statuses": [r["status"] for r in rows],
            "codes": [r["failure_code"] for r in rows],
            "messages": [r["failure_message"] for r in rows],
            "updated": [r["updated_at"] for r in rows],
            "completed": [r["completed_at"] for r in rows],
            "attempts_added": [r["attempts_added"] for r in rows],
        },
    )


def _lock_holds(session: Session, transactions: Sequence[Pending]) -> dict[uuid.UUID, _Hold]:
    """Lock the holds the batch's captures, voids and expiries name; return them by id.

    A hold is in the same lane as its operations, so only this drain writes it;
    the lock keeps an ops read from seeing a half-written batch.
    """
    hold_ids = sorted({t.hold_id for t in transactions if t.hold_id is not None})
    if not hold_ids:
        return {}
    rows = session.execute(_LOCK_HOLDS_SQL, {"ids": hold_ids})
    return {
        row.id: _Hold(row.source_wallet_id, row.amount_minor, TransactionStatus(row.status))
        for row in rows
    }


def _lock_originals(session: Session, transactions: Sequence[Pending]) -> dict[uuid.UUID, Reversal]:
    """Lock the originals the batch's reversals name; return what is reversed of each, by id.

    Only the apply stream writes ``reversed_minor``, and it reads it here under
    the lock, so the batch starts from every reversal completed before it.
    """
    original_ids = sorted({t.reverses_id for t in transactions if t.reverses_id is not None})
    if not original_ids:
        return {}
    rows = session.execute(_LOCK_ORIGINALS_SQL, {"ids": original_ids})
    return {row.id: Reversal(row.amount_minor, row.reversed_minor) for row in rows}


def _add_reversed(
    transaction: Pending, originals: dict[uuid.UUID, Reversal]
) -> tuple[uuid.UUID, int]:
    """Count an applied reversal on its original; return ``(original id, reversed_minor after)``."""
    original = originals[transaction.reverses_id]  # present: the posting found room in it
    originals[transaction.reverses_id] = dataclasses.replace(
        original, reversed_minor=original.reversed_minor + transaction.amount_minor
    )
    return transaction.reverses_id, original.reversed_minor + transaction.amount_minor


_REVERSED_SQL = text(
    """
UPDATE transactions t SET reversed_minor = v.reversed_minor, updated_at = CAST(:now AS timestamptz)
FROM unnest(CAST(:ids AS uuid[]), CAST(:reversed AS bigint[])) AS v(id, reversed_minor)
WHERE t.id = v.id
"""
)


def _write_reversed(
    session: Session,
    originals: Mapping[uuid.UUID, Reversal],
    before: Mapping[uuid.UUID, Reversal],
    now: dt.datetime,
) -> None:
    """Store ``reversed_minor`` of the originals the batch's reversals changed: one statement."""
    changed = [i for i, original in originals.items() if original != before[i]]
    if changed:
        session.execute(
            _REVERSED_SQL,
            {
                "now": now,
                "ids": changed,
                "reversed": [originals[i].reversed_minor for i in changed],
            },
        )


def _end_hold(
    transaction: Pending,
    holds: dict[uuid.UUID, _Hold],
    status_rows: dict[uuid.UUID, dict[str, object]],
    now: dt.datetime,
) -> None:
    """Record that an applied capture, void or expiry ended its hold (completed, voided, expired)."""
    outcome = HOLD_OUTCOMES.get(TransactionType(transaction.type))
    if outcome is None or transaction.hold_id is None:
        return
    hold = holds[transaction.hold_id]  # present: the posting found it open
    check_transition(hold.status, outcome)
    hold.status = outcome
    applied_here = status_rows.get(transaction.hold_id)  # the hold was applied in this batch
    status_rows[transaction.hold_id] = {
        "id": transaction.hold_id,
        "status": outcome.value,
        "failure_code": None,
        "failure_message": None,
        "updated_at": now,
        "completed_at": now,
        "attempts_added": applied_here["attempts_added"] if applied_here else 0,
    }


def _lock_wallets(session: Session, wallet_ids: set[uuid.UUID]) -> dict[uuid.UUID, WalletState]:
    """Lock the wallets ``FOR NO KEY UPDATE`` in sorted id order; return their states by id.

    Sorted order means two batches that share wallets cannot deadlock. The
    overdraft limit is read under the same lock that ops' change of it takes
    (``shared.services.wallets.set_overdraft_limit``), so a batch posts against
    the limit that holds when it commits.
    """
    rows = session.execute(_LOCK_WALLETS_SQL, {"ids": list(wallet_ids)})
    return {
        row.id: WalletState(
            row.id,
            row.currency,
            row.balance_minor,
            row.held_minor,
            WalletStatus(row.status),
            row.is_system,
            row.last_sequence,
            row.overdraft_limit_minor,
        )
        for row in rows
    }


def _entry_rows(transaction: Pending, result: Applied) -> list[dict[str, object]]:
    """Return the ``ledger_entries`` rows of the entries the rules produced."""
    return [
        {
            "wallet_id": entry.wallet_id,
            "transaction_id": transaction.id,
            "transaction_type": transaction.type,
            "direction": entry.direction.value,
            "amount_minor": entry.amount_minor,
            "balance_after_minor": entry.balance_after_minor,
            "sequence": entry.sequence,
        }
        for entry in result.entries
    ]


def _hold_rows(transaction: Pending, result: Applied) -> list[dict[str, object]]:
    """Return the ``hold_entries`` rows of the held-amount changes the rules produced."""
    hold_id = transaction.id if transaction.type == TransactionType.HOLD else transaction.hold_id
    return [
        {
            "wallet_id": change.wallet_id,
            "hold_id": hold_id,
            "transaction_id": transaction.id,
            "direction": "hold" if change.amount_minor > 0 else "release",
            "amount_minor": abs(change.amount_minor),
            "held_after_minor": change.held_after_minor,
        }
        for change in result.hold_changes
    ]


def _status_row(
    transaction: Pending, result: Applied | Rejection, now: dt.datetime
) -> dict[str, object]:
    """Return the status update of one transaction: completed (held for a hold) or failed."""
    if isinstance(result, Rejection):
        return {
            "id": transaction.id,
            "status": TransactionStatus.FAILED.value,
            "failure_code": result.code.value,
            "failure_message": result.message,
            "updated_at": now,
            "completed_at": now,
            "attempts_added": 1,
        }
    held = transaction.type == TransactionType.HOLD
    return {
        "id": transaction.id,
        "status": (TransactionStatus.HELD if held else TransactionStatus.COMPLETED).value,
        "failure_code": None,
        "failure_message": None,
        "updated_at": now,
        "completed_at": None if held else now,
        "attempts_added": 1,
    }
