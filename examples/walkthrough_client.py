"""The README's walkthrough with the Python client (docs/client.md), against `make run`'s API.

    make run                                      # in one shell
    .venv/bin/python -m examples.walkthrough_client   # in another, same directory

It reads the two development keys from ``.tally/api-keys.json`` (or takes
``--service-key`` and ``--ops-key``), and prints what the README's comments
show: statuses, balances, entries, a hold captured, a group, a reversal, a batch,
an overdraft limit and a metadata filter, a signed webhook verified, and an ops retry.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tally_client import ConflictError, PermissionDeniedError, Tally, Transaction, webhooks
from tally_client.models import Event


def describe(transaction: Transaction) -> str:
    """Return ``"<type> <amount or legs> <status> <failure_code>"``, the README's line."""
    size = transaction.amount if transaction.legs is None else f"{len(transaction.legs)} legs"
    return f"{transaction.type} {size} {transaction.status} {transaction.failure_code}"


@contextmanager
def webhook_receiver(secret_of: Callable[[], str]) -> Iterator[tuple[str, queue.Queue[Event]]]:
    """Run a receiver on a free loopback port that verifies each delivery; yield its URL and
    a queue of the verified events. A delivery that does not verify is answered 400."""
    events: queue.Queue[Event] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                event = webhooks.verify(body, dict(self.headers.items()), secret_of())
            except webhooks.WebhookVerificationError:
                self.send_response(400)
            else:
                events.put(event)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", events
    finally:
        server.shutdown()
        server.server_close()


def run(url: str, service_key: str, ops_key: str, out: Callable[[str], None] = print) -> None:
    """Run the walkthrough against the API at ``url``, printing with ``out``.

    Raises:
        tally_client.APIError: a call failed in a way the walkthrough does not expect.
    """
    run_id = uuid.uuid4().hex[:8]  # keeps owner refs unique if you run it again
    with Tally(url, service_key) as tally, Tally(url, ops_key) as ops:
        # Two SGD wallets; a deposit, a transfer, and a withdrawal of more than is left.
        alice = tally.wallets.create(f"alice-{run_id}", "SGD")
        bob = tally.wallets.create(f"bob-{run_id}", "SGD")
        deposit = tally.transactions.deposit(
            Decimal("100.00"), "SGD", alice.id, idempotency_key=f"dep-{run_id}"
        )
        transfer = tally.transactions.transfer(Decimal("30.00"), "SGD", alice.id, bob.id)
        withdrawal = tally.transactions.withdraw(Decimal("80.00"), "SGD", alice.id)

        # The same key and request again: the same transaction, never a second one.
        replay = tally.transactions.deposit(
            Decimal("100.00"), "SGD", alice.id, idempotency_key=f"dep-{run_id}"
        )
        out(f"replayed the same transaction: {replay.id == deposit.id}")

        for transaction in (deposit, transfer, withdrawal):
            out(describe(tally.transactions.wait(transaction.id)))
        out(f"alice {tally.wallets.get(alice.id).balance}, bob {tally.wallets.get(bob.id).balance}")
        for entry in tally.wallets.entries(alice.id):
            out(
                f"{entry.sequence} {entry.transaction_type} {entry.direction} "
                f"{entry.amount} {entry.balance_after}"
            )

        # Holds: reserve 20.00 of Bob's 30.00, capture 12.50 for a shop; the rest is released.
        shop = tally.wallets.create(f"shop-{run_id}", "SGD")
        fees = tally.wallets.create(f"fees-{run_id}", "SGD")
        hold = tally.transactions.wait(
            tally.transactions.hold(Decimal("20.00"), "SGD", bob.id, expires_in=3600).id
        )
        out(describe(hold))
        funds = tally.wallets.get(bob.id)
        out(
            f"balance {funds.balance} available {funds.available_balance} held {funds.held_balance}"
        )
        capture = tally.transactions.capture(
            hold.id, amount=Decimal("12.50"), destination_wallet_id=shop.id
        )
        out(describe(tally.transactions.wait(capture.id)))
        try:
            tally.transactions.void(hold.id)
        except ConflictError as error:
            out(error.code)  # hold_not_open: the hold has ended

        # A split payment as one group: every leg or none.
        legs = [
            {"source_wallet_id": bob.id, "destination_wallet_id": shop.id, "amount": Decimal("9.50"), "currency": "SGD"},
            {"source_wallet_id": bob.id, "destination_wallet_id": fees.id, "amount": Decimal("0.50"), "currency": "SGD"},
        ]  # fmt: skip
        out(describe(tally.transactions.wait(tally.transactions.group(legs).id)))
        out(" ".join(str(tally.wallets.get(w.id).balance) for w in (bob, shop, fees)))

        # A reversal: 2.50 of the captured 12.50 goes back from the shop to Bob.
        reversal = tally.transactions.reverse(capture.id, amount=Decimal("2.50"))
        out(describe(tally.transactions.wait(reversal.id)))
        out(f"reversed {tally.transactions.get(capture.id).reversed_amount}")

        # A batch: one request, one commit, one result per item; a bad item refuses only itself.
        carol = tally.wallets.create(f"carol-{run_id}", "SGD")
        results = tally.transactions.submit_batch(
            [
                {"type": "deposit", "amount": Decimal("50.00"), "currency": "SGD", "destination_wallet_id": carol.id},
                {"type": "withdrawal", "amount": Decimal("20.00"), "currency": "SGD", "source_wallet_id": carol.id},
                {"type": "deposit", "amount": "1.005", "currency": "SGD", "destination_wallet_id": carol.id},
            ]
        )  # fmt: skip
        for result in results:
            if result.transaction is not None:
                out(f"{result.status} {result.transaction.type}")
                tally.transactions.wait(result.transaction.id)
            elif result.problem is not None:
                out(f"{result.status} {result.problem.code}")

        # An overdraft limit (ops): Carol may go 25.00 below zero; a limit below what she
        # uses is refused. Her order number finds the withdrawal again.
        ops.wallets.update(carol.id, overdraft_limit=Decimal("25.00"))
        order = {"order": f"o-{run_id}"}
        spent = tally.transactions.withdraw(Decimal("40.00"), "SGD", carol.id, metadata=order)
        out(describe(tally.transactions.wait(spent.id)))
        out(f"carol available {tally.wallets.get(carol.id).available_balance}")
        try:
            ops.wallets.update(carol.id, overdraft_limit=Decimal("5.00"))
        except ConflictError as error:
            out(error.code)  # overdraft_in_use
        out(f"found {[t.id for t in tally.transactions.list(metadata=order)] == [spent.id]}")

        # Webhooks: register a receiver that verifies every delivery's signature.
        secret: list[str] = []
        with webhook_receiver(lambda: secret[0]) as (hook_url, events):
            endpoint = ops.webhook_endpoints.create(
                hook_url, events=["transaction.completed", "transaction.failed"]
            )
            secret.append(endpoint.secret)
            sent = {
                tally.transactions.deposit(Decimal("5.00"), "SGD", bob.id).id,
                tally.transactions.withdraw(Decimal("500.00"), "SGD", bob.id).id,
            }
            received: dict[uuid.UUID, Event] = {}
            while set(received) != sent:  # in any order, each at least once
                event = events.get(timeout=60)
                if isinstance(event.data, Transaction) and event.data.id in sent:
                    received[event.data.id] = event
            for event in sorted(received.values(), key=lambda e: e.type):
                assert isinstance(event.data, Transaction)
                out(f"{event.type} {event.data.type} {event.data.failure_code}")
            ops.webhook_endpoints.delete(endpoint.id)

        # Operations: a service key may not retry; ops may, after a top-up.
        try:
            tally.transactions.retry(withdrawal.id)
        except PermissionDeniedError as error:
            out(f"{error.status} {error.code}")
        tally.transactions.deposit(Decimal("20.00"), "SGD", alice.id)
        out(ops.transactions.retry(withdrawal.id).status)
        out(describe(tally.transactions.wait(withdrawal.id)))
        out(f"alice {tally.wallets.get(alice.id).balance}")


def main() -> None:
    """Parse the command line and run the walkthrough."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--keys", default=".tally/api-keys.json", help="tally up's dev keys")
    parser.add_argument("--service-key")
    parser.add_argument("--ops-key")
    args = parser.parse_args()
    keys = {}
    if not (args.service_key and args.ops_key):
        keys = json.loads(Path(args.keys).read_text())
    run(args.url, args.service_key or keys["service"], args.ops_key or keys["ops"])


if __name__ == "__main__":
    main()
