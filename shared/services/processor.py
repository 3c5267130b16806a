"""The apply path: drain a shard of pending transactions into the ledger.

Design (docs/architecture.md): every transaction has a *lane*, the wallet
whose debits it orders (its debited wallet; a deposit's destination), and
lanes are hashed into ``TALLY_SHARD_COUNT`` *shards*. A broker message means
"shard S has pending work". The one drain that holds S's lock takes the
oldest pending transactions of S in acceptance order (``lane_sequence``, one
sequence for all lanes, so the first N of a shard are a prefix of each of its
lanes), however many lanes they belong to, and applies them in one database
transaction. Work spread over many wallets is therefore batched as well as
work on one wallet. A duplicate or late message finds nothing to do, so
correctness never depends on the broker (design.md invariants 3, 4 and 6).

A drain holds the shard's session-level advisory lock (``shared.db.advisory_lock``)
from its first claim to its last apply. Each batch is two short database
transactions:

1. **claim**: pick the head of the shard and add one to each picked
   transaction's ``attempts``, committed on its own so that an attempt that
   dies (SIGKILL, lost connection) is still counted. A transaction whose
   earlier attempt did not finish is applied alone, so one poison transaction
   cannot take a batch down with it; past ``attempts_max`` it ends ``failed``
   with ``retries_exhausted`` (Celery's ``task_reject_on_worker_lost`` would
   otherwise redeliver it forever: Redis keeps no delivery count).
2. **apply**: lock the claimed rows that are still ``pending`` (a re-delivery
   finds none), lock every wallet they touch in sorted id order (two shards'
   drains that share a wallet cannot deadlock), run the posting rules in
   acceptance order, and write entries, balances and statuses together in one
   commit (invariant 4).

Row locks are ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: intake's foreign-key
checks take ``FOR KEY SHARE`` on the same wallet rows in column order, and
``FOR UPDATE`` would make the two deadlock (PostgreSQL docs, "Row-Level Locks").
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import structlog
from sqlalchemy import Connection, CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from shared import db
from shared.ledger.errors import FailureCode
from shared.ledger.rules import (
    Applied,
    Entry,
    Leg,
    Posting,
    Rejection,
    WalletState,
    post,
    wallet_ids_of,
)
from shared.ledger.states import TransactionStatus, TransactionType, WalletStatus
from shared.metrics import RETRIES_EXHAUSTED, TRANSACTIONS_SETTLED
from shared.models import LedgerEntry, Transaction, Wallet

#: The Celery task name that drains one shard (``worker.tasks``).
DRAIN_SHARD_TASK = "tally.drain_shard"

#: Called after each apply commit with the ids of the transactions it settled.
Settled = Callable[[Sequence[uuid.UUID]], None]


def shard_of(lane_wallet_id: uuid.UUID, shard_count: int) -> int:
    """Return the shard (``0 .. shard_count - 1``) of a lane.

    A version 4 UUID's low bits are random, so lanes spread evenly over shards.
    """
    return lane_wallet_id.int % shard_count


def shard_signal_key(shard: int | str) -> str:
    """Return the Redis key that marks "a drain message for this shard is queued".

    Intake publishes only when it can ``SET NX`` this key; the worker deletes it
    *before* it reads the shard. So a transaction committed before a failed
    ``SET NX`` is seen by the drain that the queued message will run, and no
    wakeup is lost; one committed later finds the key gone and publishes. The
    key expires, so a lost message only delays its shard until the sweep.
    """
    return f"tally:shard:{shard}"


_log = structlog.get_logger(__name__)


@dataclasses.dataclass(slots=True)
class DrainReport:
    """What one :func:`drain_shard` call did.

    Attributes:
        settled: transactions that left ``pending`` (completed, held or failed).
        failed: of those, how many failed a business rule or ran out of attempts.
        batches: apply transactions committed.
        more: True when it stopped at ``batches_max`` with work left in the shard.
    """

    settled: int = 0
    failed: int = 0
    batches: int = 0
    more: bool = False


def drain_shard(
    shard: int,
    *,
    batch_size: int,
    attempts_max: int,
    batches_max: int = 50,
    settled: Settled | None = None,
) -> DrainReport:
    """Apply the pending transactions of one shard, oldest first, until none is left.

    Args:
        shard: the shard to drain (``0 .. TALLY_SHARD_COUNT - 1``).
        batch_size: transactions per apply database transaction.
        attempts_max: apply attempts before a transaction fails ``retries_exhausted``.
        batches_max: stop after this many batches (``more`` is then True) so one
            busy shard cannot hold a worker forever.
        settled: called after each commit with the ids it settled (long-poll wake-ups);
            an exception it raises is logged, never propagated: the commit stands.

    Raises:
        shared.db.LockBusy: another drain holds this shard; try again shortly.
        sqlalchemy.exc.DBAPIError: a database error; :func:`shared.db.is_transient`
            tells whether re-running the drain may succeed. Nothing is half-applied.
    """
    report = DrainReport()
    # One drain per shard at a time, across its claim and apply transactions: a
    # second drain (a duplicate message, the sweep) backs off instead of claiming
    # the same transactions between the first one's claim and apply.
    with db.advisory_lock(f"shard:{shard}") as connection:
        while report.batches < batches_max:
            ids = _drain_batch(connection, shard, report, batch_size, attempts_max)
            if ids is None:
                return report
            if settled is not None and ids:
                try:
                    settled(ids)
                except Exception:
                    _log.warning("settled_callback_failed", exc_info=True)
    report.more = True
    return report


def _drain_batch(
    connection: Connection, shard: int, report: DrainReport, batch_size: int, attempts_max: int
) -> Sequence[uuid.UUID] | None:
    """Claim and apply one batch of the shard; return the ids it settled, None when empty."""
    with db.transaction(connection) as session:
        claimed = claim_batch(session, shard, batch_size=batch_size, attempts_max=attempts_max)
    if claimed is None:
        return None
    if claimed.exhausted:  # counted only now that the failure is committed
        RETRIES_EXHAUSTED.inc()
        TRANSACTIONS_SETTLED.labels(status="failed").inc()
        report.settled += 1
        report.failed += 1
        return claimed.ids
    with db.transaction(connection) as session:
        statuses = apply_batch(session, claimed.ids)
    for status, count in statuses.items():
        TRANSACTIONS_SETTLED.labels(status=status).inc(count)
    report.settled += sum(statuses.values())
    report.failed += statuses.get(TransactionStatus.FAILED, 0)
    report.batches += 1
    return claimed.ids if statuses else ()


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """The transactions picked for one apply; ``exhausted`` when the head was failed instead."""

    ids: Sequence[uuid.UUID]
    exhausted: bool = False


def claim_batch(
    session: Session, shard: int, *, batch_size: int, attempts_max: int
) -> Claim | None:
    """Pick the head of the shard for the next apply and count the attempt.

    The head is the shard's oldest ``batch_size`` pending transactions by
    ``lane_sequence``: for each lane of the shard, a prefix of its pending
    transactions, so lane order holds. The caller holds the shard's lock
    (:func:`drain_shard` does), so no other drain claims the same transactions.

    Returns:
        None when the shard has nothing pending; a ``Claim`` of the picked ids
        otherwise (just the head when an earlier attempt on it did not finish,
        and never past a transaction whose earlier attempt did not finish); a
        ``Claim`` with ``exhausted=True`` when the head had used up its
        attempts and was failed with ``retries_exhausted`` (logged at ERROR).
    """
    rows = session.execute(
        select(Transaction.id, Transaction.attempts)
        .where(Transaction.shard == shard, Transaction.status == TransactionStatus.PENDING)
        .order_by(Transaction.lane_sequence)
        .limit(batch_size)
    ).all()
    if not rows:
        return None
    head_id, head_attempts = rows[0]
    if head_attempts >= attempts_max:
        _fail_exhausted(session, head_id, head_attempts)
        return Claim((head_id,), exhausted=True)
    if head_attempts > 0:
        ids: list[uuid.UUID] = [head_id]
    else:
        # Stop before a suspect: everything after it in its lane must wait for it,
        # and cutting the whole batch there keeps that true without knowing lanes.
        ids = []
        for transaction_id, attempts in rows:
            if attempts > 0:
                break
            ids.append(transaction_id)
    session.execute(
        update(Transaction)
        .where(Transaction.id.in_(ids))
        .values(attempts=Transaction.attempts + 1, updated_at=func.now())
    )
    return Claim(ids)


def _fail_exhausted(session: Session, transaction_id: uuid.UUID, attempts: int) -> None:
    session.execute(
        update(Transaction)
        .where(Transaction.id == transaction_id, Transaction.status == TransactionStatus.PENDING)
        .values(
            status=TransactionStatus.FAILED.value,
            failure_code=FailureCode.RETRIES_EXHAUSTED.value,
            failure_message=f"gave up after {attempts} apply attempts; an operator may retry it",
            completed_at=func.now(),
            updated_at=func.now(),
        )
    )
    _log.error("retries_exhausted", transaction_id=str(transaction_id), attempts=attempts)


def reshard_pending(session: Session, *, shard_count: int) -> int:
    """Move every pending transaction to the shard its lane has under ``shard_count``.

    Run by ``tally migrate`` so a changed ``TALLY_SHARD_COUNT`` leaves no
    transaction in a shard nobody drains. Change the count with the workers
    stopped: a lane split across two shards could be drained out of order.

    Returns:
        How many transactions moved.
    """
    lanes = session.execute(
        select(Transaction.lane_wallet_id, Transaction.shard)
        .where(Transaction.status == TransactionStatus.PENDING)
        .distinct()
    ).all()
    moved = 0
    for lane, shard in lanes:
        if shard != shard_of(lane, shard_count):
            result = session.execute(
                update(Transaction)
                .where(
                    Transaction.lane_wallet_id == lane,
                    Transaction.status == TransactionStatus.PENDING,
                )
                .values(shard=shard_of(lane, shard_count))
            )
            moved += cast(CursorResult[Any], result).rowcount
    return moved


def posting_of(transaction: Transaction) -> Posting:
    """Return the posting a stored transaction asks for (its legs, in minor units)."""
    transaction_type = TransactionType(transaction.type)
    source = transaction.source_wallet_id
    assert source is not None
    destination = transaction.destination_wallet_id or source
    leg = Leg(source, destination, transaction.amount_minor)
    return Posting(transaction_type, transaction.currency, (leg,))


def apply_batch(session: Session, transaction_ids: Sequence[uuid.UUID]) -> collections.Counter[str]:
    """Apply the claimed transactions that are still pending, in acceptance order, in this transaction.

    The caller holds the shard's lock; rows are re-read and locked anyway, so a
    transaction applied by an earlier, unacknowledged attempt is not applied twice.

    Returns:
        How many transactions reached each status (``{"completed": 7, "failed": 1}``);
        empty for a duplicate delivery.
    """
    transactions = list(
        session.scalars(
            select(Transaction)
            .where(
                Transaction.id.in_(transaction_ids),
                Transaction.status == TransactionStatus.PENDING,
            )
            .order_by(Transaction.lane_sequence)
            .with_for_update(key_share=True)
        )
    )
    if not transactions:
        return collections.Counter()  # a duplicate delivery: someone applied them already
    postings = [posting_of(t) for t in transactions]
    wallets = _lock_wallets(session, set().union(*(wallet_ids_of(p) for p in postings)))
    before = {wid: (w.balance_minor, w.held_minor, w.last_sequence) for wid, w in wallets.items()}

    now = dt.datetime.now(dt.UTC)
    entry_rows: list[dict[str, object]] = []
    status_rows: list[dict[str, object]] = []
    for transaction, posting in zip(transactions, postings, strict=True):
        result = post(posting, wallets)  # updates ``wallets`` in place on success
        if isinstance(result, Applied):
            entry_rows.extend(_entry_row(transaction, entry) for entry in result.entries)
        status_rows.append(_status_row(transaction, posting, result, now))

    wallet_rows = [
        {
            "id": wid,
            "balance_minor": w.balance_minor,
            "held_minor": w.held_minor,
            "last_sequence": w.last_sequence,
            "updated_at": now,
        }
        for wid, w in wallets.items()
        if before[wid] != (w.balance_minor, w.held_minor, w.last_sequence)
    ]
    if wallet_rows:
        session.execute(update(Wallet), wallet_rows)
    if entry_rows:
        session.execute(insert(LedgerEntry), entry_rows)
    session.execute(update(Transaction), status_rows)
    return collections.Counter(str(row["status"]) for row in status_rows)


def _lock_wallets(session: Session, wallet_ids: set[uuid.UUID]) -> dict[uuid.UUID, WalletState]:
    """Lock the wallets ``FOR NO KEY UPDATE`` in sorted id order; return their states by id.

    Sorted order means two batches that share wallets cannot deadlock.
    """
    rows = session.execute(
        select(
            Wallet.id,
            Wallet.currency,
            Wallet.balance_minor,
            Wallet.held_minor,
            Wallet.status,
            Wallet.is_system,
            Wallet.last_sequence,
        )
        .where(Wallet.id.in_(sorted(wallet_ids)))
        .order_by(Wallet.id)
        .with_for_update(key_share=True)
    )
    return {
        row.id: WalletState(
            row.id,
            row.currency,
            row.balance_minor,
            row.held_minor,
            WalletStatus(row.status),
            row.is_system,
            row.last_sequence,
        )
        for row in rows
    }


def _entry_row(transaction: Transaction, entry: Entry) -> dict[str, object]:
    """Return the ``ledger_entries`` row of one entry the rules produced."""
    return {
        "wallet_id": entry.wallet_id,
        "transaction_id": transaction.id,
        "transaction_type": transaction.type,
        "direction": entry.direction.value,
        "amount_minor": entry.amount_minor,
        "balance_after_minor": entry.balance_after_minor,
        "sequence": entry.sequence,
    }


def _status_row(
    transaction: Transaction, posting: Posting, result: Applied | Rejection, now: dt.datetime
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
        }
    held = posting.type is TransactionType.HOLD
    return {
        "id": transaction.id,
        "status": (TransactionStatus.HELD if held else TransactionStatus.COMPLETED).value,
        "failure_code": None,
        "failure_message": None,
        "updated_at": now,
        "completed_at": None if held else now,
    }
