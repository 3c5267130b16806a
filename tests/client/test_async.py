"""``AsyncTally`` against the real API: the operations of test_operations.py, awaited.

Retries, waits and the coverage of the served document run for both clients
in their own modules (``FLAVORS``); this module checks the async surface call
by call, with the transactions applied by ``drain_stream`` as there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest
from tally_client import AsyncTally, ConflictError, NotFoundError, UnprocessableError

from tests.client.conftest import run_in_own_loop, secret_of
from tests.helpers import drain_stream

pytestmark = pytest.mark.pipeline


def test_async_client_operations(
    api_url: str, service_headers: dict[str, str], ops_headers: dict[str, str]
) -> None:
    run_in_own_loop(
        lambda: _operations(api_url, secret_of(service_headers), secret_of(ops_headers))
    )


async def _operations(url: str, service_key: str, ops_key: str) -> None:
    async with AsyncTally(url, service_key) as tally, AsyncTally(url, ops_key) as ops:
        alice = await tally.wallets.create(f"async-{uuid.uuid4()}", "SGD")
        bob = await tally.wallets.create(f"async-{uuid.uuid4()}", "SGD")
        assert (await tally.wallets.get(alice.id)).id == alice.id
        assert [w.id async for w in tally.wallets.list(owner_ref=alice.owner_ref)] == [alice.id]
        with pytest.raises(ConflictError):
            await tally.wallets.create(alice.owner_ref or "", "SGD")

        deposit = await tally.transactions.deposit(Decimal("100.00"), "SGD", alice.id, idempotency_key=f"a-{alice.id}")  # fmt: skip
        replay = await tally.transactions.deposit("100.00", "SGD", alice.id, idempotency_key=f"a-{alice.id}")  # fmt: skip
        assert replay.id == deposit.id
        with pytest.raises(UnprocessableError) as invalid:
            await tally.transactions.withdraw("0.001", "SGD", alice.id)
        assert [e.field for e in invalid.value.errors] == ["amount"]
        transfer = await tally.transactions.transfer("30.00", "SGD", alice.id, bob.id)
        hold = await tally.transactions.hold("10.00", "SGD", bob.id, expires_in=60)
        other = await tally.transactions.hold("5.00", "SGD", bob.id)
        legs = [
            {"source_wallet_id": alice.id, "destination_wallet_id": bob.id, "amount": "1.00", "currency": "SGD"},
            {"source_wallet_id": bob.id, "destination_wallet_id": alice.id, "amount": "2.00", "currency": "SGD"},
        ]  # fmt: skip
        group = await tally.transactions.group(legs)
        results = await tally.transactions.submit_batch(
            [
                {
                    "type": "deposit",
                    "amount": "1.00",
                    "currency": "SGD",
                    "destination_wallet_id": bob.id,
                }
            ]  # fmt: skip
        )
        assert [r.status for r in results] == [202]
        await asyncio.to_thread(drain_stream)

        assert (await tally.transactions.wait(hold.id, 60)).status == "held"
        capture = await tally.transactions.capture(hold.id, amount="4.00")
        void = await tally.transactions.void(other.id)
        await asyncio.to_thread(drain_stream)
        for transaction in (deposit, transfer, group, capture, void):
            assert (await tally.transactions.get(transaction.id, wait=5)).status == "completed"
        assert (await tally.wallets.get(bob.id)).balance == Decimal("26.00")
        ids = {t.id async for t in tally.transactions.list(wallet_id=bob.id, limit=2)}
        assert {transfer.id, hold.id, capture.id} <= ids
        entries = [e.sequence async for e in tally.wallets.entries(bob.id, limit=1)]
        assert entries == sorted(entries, reverse=True) and entries[-1] == 1
        assert (await tally.wallets.balance_at(bob.id)).balance == Decimal("26.00")
        events = [e.type async for e in tally.events.list(transaction_id=deposit.id)]
        assert events == ["transaction.completed"]

        failed = await tally.transactions.withdraw("1000.00", "SGD", bob.id)
        await asyncio.to_thread(drain_stream)
        assert (await ops.transactions.retry(failed.id)).status == "pending"
        assert (await ops.transactions.retry_failed(wallet_id=bob.id, dry_run=True)).count == 0
        await asyncio.to_thread(drain_stream)
        assert (await ops.wallets.update(bob.id, status="frozen")).status == "frozen"
        audit = [a.action async for a in ops.audit_events.list(target_id=bob.id)]
        assert "wallet.freeze" in audit

        run = await ops.reconciliations.start()
        assert (await ops.reconciliations.get(run.id)).id == run.id
        assert run.id in {r.id async for r in ops.reconciliations.list()}
        endpoint = await ops.webhook_endpoints.create("http://127.0.0.1:9/hooks")
        assert (await ops.webhook_endpoints.get(endpoint.id)).url == endpoint.url
        assert endpoint.id in {e.id async for e in ops.webhook_endpoints.list()}
        assert (await ops.webhook_endpoints.update(endpoint.id, events=["transaction.failed"])).events == ["transaction.failed"]  # fmt: skip
        assert [d async for d in ops.webhook_endpoints.deliveries(endpoint.id)] == []
        await ops.webhook_endpoints.delete(endpoint.id)
        with pytest.raises(NotFoundError):
            await ops.webhook_endpoints.retry_delivery(uuid.uuid4())
        assert (await ops.ops_overview()).pending.count >= 0
        assert (await tally.health()).status == "ok"
        assert (await tally.readiness()).status == "ok"
        assert "tally_" in await tally.metrics()
        assert "paths" in await tally.openapi()

        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        scheduled = await tally.transactions.transfer("1.00", "SGD", alice.id, bob.id, scheduled_at=later)  # fmt: skip
        assert (scheduled.status, scheduled.scheduled_at) == ("scheduled", later)
        assert (await tally.transactions.cancel(scheduled.id)).status == "canceled"
        assert (await tally.transactions.wait(scheduled.id)).status == "canceled"
        monitor = await tally.balance_monitors.create(alice.id, "balance", "gt", "1000.00")
        assert (await tally.balance_monitors.get(monitor.id)).state == "clear"
        assert [m.id async for m in tally.balance_monitors.list(wallet_id=alice.id)] == [monitor.id]
        await tally.transactions.deposit("1000.00", "SGD", alice.id)
        await asyncio.to_thread(drain_stream)
        assert (await tally.balance_monitors.get(monitor.id)).state == "triggered"
        await tally.balance_monitors.delete(monitor.id)
        with pytest.raises(NotFoundError):
            await tally.balance_monitors.delete(monitor.id)
