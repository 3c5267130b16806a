"""Every operation of the API through ``Tally``, against the real API process and database.

The submissions are applied by ``drain_stream`` in this process, as a worker
would apply them, so each test reads the outcome without waiting on a worker.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from tally_client import (
    BalanceMonitorEvent,
    BatchResult,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    Tally,
    Transaction,
    UnprocessableError,
    Wallet,
)

from tests.helpers import drain_stream

pytestmark = pytest.mark.pipeline


def _wallet(tally: Tally, currency: str = "SGD") -> Wallet:
    return tally.wallets.create(f"client-{uuid.uuid4()}", currency)


def _settled(tally: Tally, transaction: Transaction) -> Transaction:
    drain_stream()
    return tally.transactions.get(transaction.id)


def test_wallets_create_get_list_entries_balance_and_freeze(tally: Tally, tally_ops: Tally) -> None:
    wallet = _wallet(tally)
    assert (wallet.currency, wallet.balance, wallet.status) == ("SGD", Decimal("0.00"), "active")
    assert tally.wallets.get(wallet.id) == wallet
    assert [w.id for w in tally.wallets.list(owner_ref=wallet.owner_ref)] == [wallet.id]
    before = dt.datetime.now(dt.UTC)
    _settled(tally, tally.transactions.deposit(Decimal("10.50"), "SGD", wallet.id))
    _settled(tally, tally.transactions.deposit("2", "SGD", wallet.id))

    entries = list(tally.wallets.entries(wallet.id, limit=1))  # two pages, one entry each
    assert [(e.sequence, e.amount, e.balance_after) for e in entries] == [
        (2, Decimal("2.00"), Decimal("12.50")),
        (1, Decimal("10.50"), Decimal("10.50")),
    ]
    assert str(tally.wallets.get(wallet.id).balance) == "12.50"
    assert tally.wallets.balance_at(wallet.id, before).balance == Decimal("0.00")
    assert tally.wallets.balance_at(wallet.id).balance == Decimal("12.50")

    with pytest.raises(PermissionDeniedError) as forbidden:
        tally.wallets.update(wallet.id, status="frozen")
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    assert tally_ops.wallets.update(wallet.id, status="frozen").status == "frozen"
    assert tally_ops.wallets.update(wallet.id, status="active").status == "active"


def test_errors_carry_the_problem_code_status_detail_and_fields(tally: Tally) -> None:
    wallet = _wallet(tally)
    with pytest.raises(ConflictError) as exists:
        tally.wallets.create(wallet.owner_ref or "", "SGD")
    assert (exists.value.status, exists.value.code) == (409, "wallet_exists")
    assert str(wallet.id) in exists.value.detail

    with pytest.raises(NotFoundError) as missing:
        tally.wallets.get(uuid.uuid4())
    assert missing.value.code == "wallet_not_found"

    with pytest.raises(UnprocessableError) as invalid:
        tally.transactions.deposit("1.005", "SGD", wallet.id)
    assert invalid.value.code == "validation_failed"
    assert [e.field for e in invalid.value.errors] == ["amount"]

    with pytest.raises(TypeError):
        tally.transactions.deposit(1.5, "SGD", wallet.id)  # type: ignore[arg-type]


def test_submissions_are_idempotent_by_key_and_keyed_per_call(tally: Tally) -> None:
    wallet = _wallet(tally)
    first = tally.transactions.deposit("5.00", "SGD", wallet.id, idempotency_key="dep-1")
    again = tally.transactions.deposit("5.00", "SGD", wallet.id, idempotency_key="dep-1")
    assert again.id == first.id
    with pytest.raises(UnprocessableError) as reused:
        tally.transactions.deposit("6.00", "SGD", wallet.id, idempotency_key="dep-1")
    assert reused.value.code == "idempotency_key_reused"
    # Without a key, each call is a new transaction.
    one = tally.transactions.deposit("5.00", "SGD", wallet.id)
    two = tally.transactions.deposit("5.00", "SGD", wallet.id)
    assert len({first.id, one.id, two.id}) == 3


def test_deposit_withdraw_transfer_and_list(tally: Tally) -> None:
    alice, bob = _wallet(tally), _wallet(tally)
    deposit = tally.transactions.deposit(
        "100.00", "SGD", alice.id, description="top-up", metadata={"source": "bank"}
    )
    assert (deposit.status, deposit.metadata) == ("pending", {"source": "bank"})
    transfer = tally.transactions.transfer("30.00", "SGD", alice.id, bob.id)
    withdrawal = tally.transactions.withdraw("80.00", "SGD", alice.id)
    drain_stream()
    got = {t.id: t for t in tally.transactions.list(wallet_id=alice.id, limit=2)}
    assert got[deposit.id].status == got[transfer.id].status == "completed"
    assert got[withdrawal.id].failure_code == "insufficient_funds"
    assert [t.id for t in tally.transactions.list(wallet_id=alice.id, status="failed")] == [
        withdrawal.id
    ]
    assert tally.wallets.get(alice.id).balance == Decimal("70.00")


def test_hold_capture_void_and_group(tally: Tally) -> None:
    bob, shop, fees = _wallet(tally), _wallet(tally), _wallet(tally)
    _settled(tally, tally.transactions.deposit("30.00", "SGD", bob.id))
    hold = _settled(tally, tally.transactions.hold("20.00", "SGD", bob.id, expires_in=3600))
    assert hold.status == "held" and hold.expires_at is not None
    assert tally.wallets.get(bob.id).available_balance == Decimal("10.00")

    capture = tally.transactions.capture(hold.id, amount=Decimal("12.50"), destination_wallet_id=shop.id)  # fmt: skip
    assert (capture.type, capture.hold_id) == ("capture", hold.id)
    assert _settled(tally, capture).status == "completed"
    with pytest.raises(ConflictError) as ended:
        tally.transactions.void(hold.id)
    assert ended.value.code == "hold_not_open"

    other = _settled(tally, tally.transactions.hold("5.00", "SGD", bob.id))
    assert _settled(tally, tally.transactions.void(other.id)).status == "completed"
    assert tally.transactions.get(other.id).status == "voided"

    legs = [
        {"source_wallet_id": bob.id, "destination_wallet_id": shop.id, "amount": Decimal("9.50"), "currency": "SGD"},
        {"source_wallet_id": bob.id, "destination_wallet_id": fees.id, "amount": "0.50", "currency": "SGD"},
    ]  # fmt: skip
    group = _settled(tally, tally.transactions.group(legs))
    assert group.status == "completed" and group.legs is not None and len(group.legs) == 2
    assert tally.wallets.get(fees.id).balance == Decimal("0.50")


def test_submit_batch_keys_each_item_and_replays(tally: Tally) -> None:
    carol = _wallet(tally)
    items = [
        {"type": "deposit", "amount": Decimal("50"), "currency": "SGD", "destination_wallet_id": carol.id, "idempotency_key": f"b1-{carol.id}"},
        {"type": "withdrawal", "amount": "20.00", "currency": "SGD", "source_wallet_id": carol.id},
        {"type": "deposit", "amount": "1.005", "currency": "SGD", "destination_wallet_id": carol.id},
    ]  # fmt: skip
    results = tally.transactions.submit_batch(items)
    assert [r.status for r in results] == [202, 202, 422]
    assert all(isinstance(r, BatchResult) for r in results)
    assert results[2].problem is not None and results[2].problem.code == "validation_failed"
    replayed = tally.transactions.submit_batch(items[:1])
    assert replayed[0].replayed and replayed[0].transaction is not None
    assert results[0].transaction is not None
    assert replayed[0].transaction.id == results[0].transaction.id
    drain_stream()
    assert tally.wallets.get(carol.id).balance == Decimal("30.00")


def test_ops_retry_and_bulk_retry(tally: Tally, tally_ops: Tally) -> None:
    wallet = _wallet(tally)
    failed = _settled(tally, tally.transactions.withdraw("1.00", "SGD", wallet.id))
    assert failed.status == "failed"
    with pytest.raises(PermissionDeniedError):
        tally.transactions.retry(failed.id)
    dry = tally_ops.transactions.retry_failed(wallet_id=wallet.id, dry_run=True)
    assert (dry.count, dry.transaction_ids) == (1, [failed.id])
    assert tally_ops.transactions.retry(failed.id).status == "pending"
    with pytest.raises(ConflictError) as not_retryable:
        tally_ops.transactions.retry(failed.id)
    assert not_retryable.value.code == "not_retryable"
    assert _settled(tally, failed).status == "failed"
    assert tally_ops.transactions.retry_failed(wallet_id=wallet.id).count == 1


def test_reverse(tally: Tally) -> None:
    wallet = _wallet(tally)
    deposit = _settled(tally, tally.transactions.deposit("10.00", "SGD", wallet.id))
    assert deposit.reversed_amount == Decimal("0.00")
    reversal = tally.transactions.reverse(deposit.id, amount=Decimal("4.00"))
    assert (reversal.type, reversal.reverses_id) == ("reversal", deposit.id)
    assert _settled(tally, reversal).status == "completed"
    assert tally.wallets.get(wallet.id).balance == Decimal("6.00")
    assert tally.transactions.get(deposit.id).reversed_amount == Decimal("4.00")


def test_overdraft_limit_and_metadata_filter(tally: Tally, tally_ops: Tally) -> None:
    wallet = _wallet(tally)
    limited = tally_ops.wallets.update(wallet.id, overdraft_limit=Decimal("50.00"))
    assert limited.overdraft_limit == Decimal("50.00")
    tag = str(uuid.uuid4())
    spent = tally.transactions.withdraw("30.00", "SGD", wallet.id, metadata={"order": tag})
    other = tally.transactions.withdraw("5.00", "SGD", wallet.id, metadata={"order": "other"})
    drain_stream()
    assert tally.wallets.get(wallet.id).available_balance == Decimal("-35.00")
    assert [t.id for t in tally.transactions.list(metadata={"order": tag})] == [spent.id]
    assert other.id not in {t.id for t in tally.transactions.list(metadata={"order": tag})}
    with pytest.raises(ConflictError) as in_use:
        tally_ops.wallets.update(wallet.id, overdraft_limit="10.00")
    assert in_use.value.code == "overdraft_in_use"


def test_reconciliations_events_audit_overview_and_meta(tally: Tally, tally_ops: Tally) -> None:
    started = tally_ops.reconciliations.start()
    assert started.status == "running"
    assert tally_ops.reconciliations.get(started.id).id == started.id
    assert started.id in {run.id for run in tally_ops.reconciliations.list(limit=200)}

    wallet = _wallet(tally)
    deposit = _settled(tally, tally.transactions.deposit("1.00", "SGD", wallet.id))
    events = list(tally.events.list(transaction_id=deposit.id))
    assert [(e.type, getattr(e.data, "id", None)) for e in events] == [
        ("transaction.completed", deposit.id)
    ]
    tally_ops.wallets.update(wallet.id, status="frozen")
    audit = next(tally_ops.audit_events.list(action="wallet.freeze", target_id=wallet.id))
    assert audit.target_ids == [wallet.id]
    assert tally_ops.ops_overview().pending.count >= 0
    assert tally.health().status == "ok"
    assert tally.readiness().checks == {"database": "ok", "broker": "ok"}
    assert "tally_" in tally.metrics()


def test_webhook_endpoints(tally_ops: Tally) -> None:
    created = tally_ops.webhook_endpoints.create(
        "http://127.0.0.1:9/hooks", events=["transaction.failed"], description="pager"
    )
    assert created.secret.startswith("whsec_")
    assert tally_ops.webhook_endpoints.get(created.id).events == ["transaction.failed"]
    assert created.id in {e.id for e in tally_ops.webhook_endpoints.list()}
    updated = tally_ops.webhook_endpoints.update(created.id, status="disabled")
    assert updated.status == "disabled"
    assert list(tally_ops.webhook_endpoints.deliveries(created.id)) == []
    with pytest.raises(NotFoundError):
        tally_ops.webhook_endpoints.retry_delivery(uuid.uuid4())
    tally_ops.webhook_endpoints.delete(created.id)
    with pytest.raises(NotFoundError):
        tally_ops.webhook_endpoints.get(created.id)


def test_scheduled_transactions_and_cancel(tally: Tally) -> None:
    alice, bob = _wallet(tally), _wallet(tally)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    deposit = tally.transactions.deposit("10.00", "SGD", alice.id, scheduled_at=later)
    assert (deposit.status, deposit.scheduled_at) == ("scheduled", later)
    transfer = tally.transactions.transfer("1.00", "SGD", alice.id, bob.id, scheduled_at=later)
    withdrawal = tally.transactions.withdraw("1.00", "SGD", bob.id, scheduled_at=later)
    legs = [
        {"source_wallet_id": alice.id, "destination_wallet_id": bob.id, "amount": "1.00", "currency": "SGD"},
        {"source_wallet_id": bob.id, "destination_wallet_id": alice.id, "amount": "1.00", "currency": "SGD"},
    ]  # fmt: skip
    group = tally.transactions.group(legs, scheduled_at=later)
    item = {"type": "deposit", "amount": "2.00", "currency": "SGD", "destination_wallet_id": bob.id, "scheduled_at": later}  # fmt: skip
    [batched] = tally.transactions.submit_batch([item])
    assert batched.transaction is not None and batched.transaction.status == "scheduled"
    drain_stream()  # a future time: nothing is applied
    waiting = {t.id for t in tally.transactions.list(status="scheduled", wallet_id=alice.id)}
    assert waiting == {deposit.id, transfer.id, group.id}

    canceled = tally.transactions.cancel(deposit.id)
    assert (canceled.status, canceled.scheduled_at) == ("canceled", later)
    assert canceled.completed_at is not None
    assert tally.transactions.wait(deposit.id).status == "canceled"  # terminal: no waiting
    with pytest.raises(ConflictError) as twice:
        tally.transactions.cancel(deposit.id)
    assert twice.value.code == "not_cancelable"
    for transaction in (transfer, withdrawal, group, batched.transaction):
        assert tally.transactions.cancel(transaction.id).status == "canceled"
    assert [e.type for e in tally.events.list(transaction_id=deposit.id)] == [
        "transaction.canceled"
    ]
    assert tally.wallets.get(alice.id).balance == tally.wallets.get(bob.id).balance == Decimal(0)

    # A time not in the future applies at once; a naive one is refused before sending.
    now = tally.transactions.deposit("3.00", "SGD", alice.id, scheduled_at=dt.datetime.now(dt.UTC))
    assert (now.status, now.scheduled_at) == ("pending", None)
    assert _settled(tally, now).status == "completed"
    with pytest.raises(ConflictError) as applied:
        tally.transactions.cancel(now.id)
    assert applied.value.code == "not_cancelable"
    with pytest.raises(ValueError, match="scheduled_at"):
        tally.transactions.deposit("1.00", "SGD", alice.id, scheduled_at=dt.datetime.now())
    with pytest.raises(UnprocessableError) as too_far:
        tally.transactions.deposit("1.00", "SGD", alice.id, scheduled_at=later.replace(year=later.year + 2))  # fmt: skip
    assert [e.field for e in too_far.value.errors] == ["scheduled_at"]


def test_balance_monitors(tally: Tally) -> None:
    wallet = _wallet(tally)
    low = tally.balance_monitors.create(wallet.id, "available_balance", "lte", "0", description="top up")  # fmt: skip
    assert (low.state, low.value, low.description) == ("triggered", Decimal("0.00"), "top up")
    assert low.triggered_at is not None  # the condition held at creation
    rich = tally.balance_monitors.create(wallet.id, "balance", "gte", Decimal("10.00"))
    assert (rich.state, rich.triggered_at, rich.field, rich.operator) == ("clear", None, "balance", "gte")  # fmt: skip
    assert tally.balance_monitors.get(rich.id) == rich
    listed = [m.id for m in tally.balance_monitors.list(wallet_id=wallet.id, limit=1)]
    assert listed == [rich.id, low.id]  # newest first, one per page

    deposit = _settled(tally, tally.transactions.deposit("10.00", "SGD", wallet.id))
    assert tally.balance_monitors.get(rich.id).state == "triggered"
    assert tally.balance_monitors.get(low.id).state == "clear"
    events = {e.type: e.data for e in tally.events.list(transaction_id=deposit.id)}
    assert set(events) == {"transaction.completed", "balance_monitor.triggered", "balance_monitor.cleared"}  # fmt: skip
    triggered = events["balance_monitor.triggered"]
    assert isinstance(triggered, BalanceMonitorEvent)
    assert (triggered.monitor.id, triggered.balance) == (rich.id, Decimal("10.00"))
    assert triggered.transaction_id == deposit.id

    tally.balance_monitors.delete(rich.id)
    with pytest.raises(NotFoundError) as gone:
        tally.balance_monitors.get(rich.id)
    assert gone.value.code == "balance_monitor_not_found"
    assert [m.id for m in tally.balance_monitors.list(wallet_id=wallet.id)] == [low.id]
    with pytest.raises(NotFoundError) as unknown:
        tally.balance_monitors.create(uuid.uuid4(), "balance", "lt", "1.00")
    assert unknown.value.code == "wallet_not_found"
    with pytest.raises(UnprocessableError) as invalid:
        tally.balance_monitors.create(wallet.id, "balance", "lt", "1.005")
    assert [e.field for e in invalid.value.errors] == ["value"]
