"""Webhooks end to end: real receivers on loopback, a real worker and beat, faults.

Each receiver is an HTTP server this test starts on 127.0.0.1 (allowed by
``TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`` in the tests). The delivery schedule
is shortened by settings, so retries, the final ``failed`` and an endpoint's
disabling happen in seconds. Waits are bounded far above the expected time.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from cli.devservers import free_port
from shared import db
from tests.helpers import (
    assert_ledger_consistent,
    deposit_body,
    submit,
    transfer_body,
    wait_for,
    wait_terminal,
)
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

#: A schedule of seconds: retries after 0.2-0.5 s, failed after 12 s, disabled after 16 s
#: and 5 failures in a row.
#: The window is counted from the event, so it must outlast a worker's start on a
#: loaded machine, or a delivery whose first attempt comes late fails at once.
WEBHOOK_ENV = {
    "TALLY_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
    "TALLY_WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
    "TALLY_WEBHOOK_RETRY_WINDOW_SECONDS": "12",
    "TALLY_WEBHOOK_DISABLE_AFTER_SECONDS": "16",
    "TALLY_WEBHOOK_DISABLE_AFTER_FAILURES": "5",
    "TALLY_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.5",
    "TALLY_WEBHOOK_ATTEMPT_LEASE_SECONDS": "3",
    "TALLY_WEBHOOK_TIMEOUT_SECONDS": "2",
}


class Receiver:
    """A webhook receiver on loopback that records every request.

    Args:
        fail_first: answer 500 to the first this many attempts of each ``webhook-id``.
        always_fail: answer 500 to everything.
        delay_seconds: wait this long before answering (deliveries stay in flight).
        hold: when given, every request waits until it is set (at most 120 s).
    """

    def __init__(
        self,
        *,
        fail_first: int = 0,
        always_fail: bool = False,
        delay_seconds: float = 0,
        hold: threading.Event | None = None,
    ) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append((headers, body))
                    seen = sum(
                        1 for h, _ in receiver.requests if h["webhook-id"] == headers["webhook-id"]
                    )
                time.sleep(delay_seconds)
                if hold is not None:
                    hold.wait(120)
                failing = always_fail or seen <= fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_id(self) -> dict[str, list[tuple[dict[str, str], bytes]]]:
        """Return the requests grouped by ``webhook-id``."""
        with self._lock:
            grouped: dict[str, list[tuple[dict[str, str], bytes]]] = {}
            for headers, body in self.requests:
                grouped.setdefault(headers["webhook-id"], []).append((headers, body))
            return grouped

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook_beat() -> Iterator[CeleryProcess]:
    """A beat with the shortened delivery sweep."""
    process = CeleryProcess("beat", "webhook-beat", env=WEBHOOK_ENV).start()
    yield process
    process.stop()


@pytest.fixture
def webhook_worker() -> Iterator[Callable[..., CeleryProcess]]:
    """Start workers with the shortened delivery schedule; stop them at the end."""
    started: list[CeleryProcess] = []

    def start(**env: str) -> CeleryProcess:
        process = CeleryProcess("worker", f"hooks{len(started)}", env={**WEBHOOK_ENV, **env})
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def endpoints(client: Any, ops_headers: dict[str, str]) -> Iterator[Callable[..., dict[str, Any]]]:
    """Register endpoints (``register(url, events=None)`` -> the answer); delete them after."""
    created: list[str] = []

    def register(url: str, events: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url} | ({"events": events} if events else {})
        response = client.post("/v1/webhook-endpoints", json=body, headers=ops_headers)
        assert response.status_code == 201, response.get_data(as_text=True)
        created.append(response.get_json()["id"])
        return dict(response.get_json())

    yield register
    for endpoint_id in created:
        client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers)


def event_of(client: Any, ops_headers: dict[str, str], transaction_id: str) -> dict[str, Any]:
    """Return the one event of a transaction that has exactly one."""
    [event] = client.get(
        f"/v1/events?transaction_id={transaction_id}", headers=ops_headers
    ).get_json()["data"]
    return dict(event)


def delivery_of(client: Any, ops_headers: dict[str, str], endpoint_id: str, event_id: str) -> Any:
    """Return an endpoint's delivery of ``event_id``, or None."""
    page = client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=200", headers=ops_headers
    )
    return next((d for d in page.get_json()["data"] if d["event_id"] == event_id), None)


def wait_delivery(
    client: Any, ops_headers: dict[str, str], endpoint_id: str, event_id: str, status: str,
    *, timeout_seconds: float, worker: CeleryProcess,
) -> dict[str, Any]:  # fmt: skip
    """Wait until an endpoint's delivery of ``event_id`` is ``status``; return it."""
    return dict(
        wait_for(
            lambda: (
                (d := delivery_of(client, ops_headers, endpoint_id, event_id))
                and d["status"] == status
                and d
            ),
            timeout_seconds=timeout_seconds,
            what=f"{status} delivery",
            log=worker.log,
        )  # fmt: skip
    )


def test_a_receiver_gets_signed_completed_and_failed_events(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, webhook_worker: Any, webhook_beat: Any, endpoints: Any,
) -> None:  # fmt: skip
    worker = webhook_worker()
    receiver = Receiver()
    try:
        endpoint = endpoints(receiver.url, ["transaction.completed", "transaction.failed"])
        wallet = wallet_factory()
        deposit = submit(client, service_headers, deposit_body(wallet, "10.00")).get_json()["id"]
        withdrawal = submit(client, service_headers, {
            "type": "withdrawal", "amount": "50.00", "currency": "SGD",
            "source_wallet_id": str(wallet)}).get_json()["id"]  # fmt: skip
        wait_terminal([deposit, withdrawal], context=worker.log())
        events = {t: event_of(client, ops_headers, t) for t in (deposit, withdrawal)}
        received = wait_for(
            lambda: all(e["id"] in receiver.by_id() for e in events.values()) and receiver.by_id(),
            timeout_seconds=30, what="both events at the receiver", log=worker.log,
        )  # fmt: skip
        payloads = {}
        for transaction_id, event in events.items():
            headers, body = received[event["id"]][0]
            # The Standard Webhooks library verifies it with the secret shown at creation.
            payloads[transaction_id] = Webhook(endpoint["secret"]).verify(body, headers)
            assert headers["webhook-signature"].startswith("v1,")
        assert payloads[deposit]["type"] == "transaction.completed"
        assert payloads[deposit]["data"]["status"] == "completed"
        assert payloads[deposit]["data"]["amount"] == "10.00"
        assert payloads[withdrawal]["type"] == "transaction.failed"
        assert payloads[withdrawal]["data"]["failure_code"] == "insufficient_funds"
        assert payloads[withdrawal] == events[withdrawal]  # the same object GET /v1/events shows
        delivery = wait_delivery(
            client, ops_headers, endpoint["id"], events[deposit]["id"], "succeeded",
            timeout_seconds=30, worker=worker,
        )  # fmt: skip
        # At least one attempt: on a loaded machine a first attempt may outlive its lease
        # and be made again; what matters is that it ended delivered, with a 204.
        assert delivery["attempts"] >= 1 and delivery["last_status_code"] == 204
        assert endpoint["secret"] not in worker.log_path.read_text(errors="replace")
    finally:
        receiver.stop()


def test_500_twice_then_200_is_delivered_three_times_with_one_webhook_id(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, webhook_worker: Any, webhook_beat: Any, endpoints: Any,
) -> None:  # fmt: skip
    worker = webhook_worker()
    receiver = Receiver(fail_first=2)
    try:
        endpoint = endpoints(receiver.url, ["transaction.completed"])
        deposit = submit(
            client, service_headers, deposit_body(wallet_factory(), "1.00")
        ).get_json()["id"]
        wait_terminal([deposit], context=worker.log())
        event = event_of(client, ops_headers, deposit)
        delivery = wait_delivery(
            client, ops_headers, endpoint["id"], event["id"], "succeeded",
            timeout_seconds=30, worker=worker,
        )  # fmt: skip
        # Two 500s, then the 204: three attempts at least (more if one outlived its lease).
        assert delivery["attempts"] >= 3 and delivery["last_status_code"] == 204
        attempts = receiver.by_id()[event["id"]]
        assert len(attempts) >= 3
        assert {headers["webhook-id"] for headers, _ in attempts} == {event["id"]}
        assert len({body for _, body in attempts}) == 1  # the same event each time
    finally:
        receiver.stop()


def test_a_receiver_that_always_fails_ends_failed_then_its_endpoint_disabled(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, webhook_worker: Any, webhook_beat: Any, endpoints: Any,
) -> None:  # fmt: skip
    worker = webhook_worker()
    receiver = Receiver(always_fail=True)
    try:
        endpoint = endpoints(receiver.url, ["transaction.completed"])
        wallet = wallet_factory()
        first = submit(client, service_headers, deposit_body(wallet, "1.00")).get_json()["id"]
        wait_terminal([first], context=worker.log())
        event = event_of(client, ops_headers, first)
        delivery = wait_delivery(
            client, ops_headers, endpoint["id"], event["id"], "failed",
            timeout_seconds=40, worker=worker,
        )  # fmt: skip
        assert delivery["attempts"] >= 3 and delivery["last_status_code"] == 500
        # At ERROR: it reaches tally up's output. The whole log: its tail may have moved on.
        assert "webhook_delivery_failed" in worker.log_path.read_text(errors="replace")
        # Another event keeps failing past TALLY_WEBHOOK_DISABLE_AFTER_SECONDS: disabled.
        submit(client, service_headers, deposit_body(wallet, "1.00"))
        url = f"/v1/webhook-endpoints/{endpoint['id']}"
        wait_for(
            lambda: client.get(url, headers=ops_headers).get_json()["status"] == "disabled",
            timeout_seconds=40, what="disabled endpoint", log=worker.log,
        )  # fmt: skip
        assert "webhook_endpoint_disabled" in worker.log_path.read_text(errors="replace")
        assert endpoint["secret"] not in worker.log_path.read_text(errors="replace")
    finally:
        receiver.stop()


def test_dead_endpoints_end_disabled_while_a_live_receiver_hears_every_event(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, webhook_beat: Any, endpoints: Any,
) -> None:  # fmt: skip
    """Ten endpoints on closed ports and one live receiver, run apart as in production.

    A dead endpoint is paused after each failure, so it costs a few attempts, not
    one per event, and is disabled after 3 failures in a row over 1 s.
    """
    env = {**WEBHOOK_ENV, "TALLY_WEBHOOK_DISABLE_AFTER_FAILURES": "3",
           "TALLY_WEBHOOK_DISABLE_AFTER_SECONDS": "1"}  # fmt: skip
    receiver = Receiver()
    drains = CeleryProcess("worker", "dead-drains", queues="tally", env=env).start()
    attempts = CeleryProcess(
        "worker", "dead-hooks", queues="tally.webhooks", pool="threads", concurrency=4, env=env
    ).start()
    try:
        dead = [endpoints(f"http://127.0.0.1:{free_port()}/hooks")["id"] for _ in range(10)]
        live = endpoints(receiver.url)
        wallets = [wallet_factory() for _ in range(4)]
        ids = [
            submit(client, service_headers, deposit_body(w, "1.00")).get_json()["id"]
            for w in wallets * 15
        ]
        wait_terminal(ids, timeout_seconds=120, context=drains.log())
        event_ids = {f"evt_{e.hex}" for e in _event_ids(ids)}
        wait_for(
            lambda: event_ids <= receiver.by_id().keys(), timeout_seconds=120,
            what=f"all {len(event_ids)} events at the live receiver", log=attempts.log,
        )  # fmt: skip
        wait_for(
            lambda: all(
                client.get(f"/v1/webhook-endpoints/{d}", headers=ops_headers).get_json()["status"]
                == "disabled" for d in dead
            ),
            timeout_seconds=120, what="every dead endpoint disabled", log=attempts.log,
        )  # fmt: skip
        assert client.get(f"/v1/webhook-endpoints/{live['id']}",
                          headers=ops_headers).get_json()["status"] == "enabled"  # fmt: skip
        with db.transaction() as session:
            disabled = session.scalars(
                text(
                    "SELECT unnest(target_ids) FROM audit_events "
                    "WHERE action = 'webhook_endpoint.disable' AND actor_type = 'system'"
                )
            ).all()
            tried, created = session.execute(
                text(
                    "SELECT sum(attempts), count(*) FROM webhook_deliveries "
                    "WHERE endpoint_id = ANY(:dead)"
                ),
                {"dead": [uuid.UUID(d) for d in dead]},
            ).one()
        assert {uuid.UUID(d) for d in dead} <= set(disabled)
        # Paused after each failure: a few attempts each, not one per event (and once
        # disabled, no more deliveries at all).
        assert created <= 10 * len(event_ids) and tried < created / 2, (tried, created)
        log = attempts.log_path.read_text(errors="replace")
        assert log.count("webhook_endpoint_disabled") >= 10
    finally:
        attempts.stop()
        drains.stop()
        receiver.stop()


def test_sigkill_and_emptied_redis_lose_no_event_and_no_delivery(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any, webhook_worker: Any, webhook_beat: Any, endpoints: Any,
    redis_client: Any,
) -> None:  # fmt: skip
    """Runs last in this module: emptying Redis also ends the module's beat."""
    receiver = Receiver(delay_seconds=0.05)
    beat = None
    try:
        endpoint = endpoints(receiver.url)
        wallets = [wallet_factory() for _ in range(5)]
        rng = random.Random(10)
        ids = [
            submit(client, service_headers, deposit_body(w, "5.00")).get_json()["id"]
            for w in wallets * 10
        ]
        for _ in range(150):  # some fail insufficient_funds
            source, destination = rng.sample(wallets, 2)
            body = transfer_body(source, destination, f"{rng.randint(1, 900) / 100:.2f}")
            ids.append(submit(client, service_headers, body).get_json()["id"])
        first = webhook_worker(TALLY_BATCH_SIZE="1")
        wait_for(
            lambda: len(receiver.by_id()) >= 10, timeout_seconds=60,
            what="deliveries under way", log=first.log,
        )  # fmt: skip
        first.kill()  # mid-apply and mid-delivery
        with db.transaction() as session:
            pending = session.scalar(
                text(
                    "SELECT count(*) FROM transactions WHERE id = ANY(:ids) AND status = 'pending'"
                ),
                {"ids": [uuid.UUID(i) for i in ids]},
            )
        assert pending, "the stream ended before the kill"
        redis_client.flushall()  # every queued message, signal and the beat's lock
        beat = CeleryProcess("beat", "webhook-beat-after-flush", env=WEBHOOK_ENV).start()
        second = webhook_worker()
        final = wait_terminal(ids, timeout_seconds=120, context=second.log())
        with db.transaction() as session:
            rows = session.execute(
                text("SELECT transaction_id, type FROM events WHERE transaction_id = ANY(:ids)"),
                {"ids": [uuid.UUID(i) for i in ids]},
            ).all()
        by_transaction: dict[str, list[str]] = {}
        for row in rows:
            by_transaction.setdefault(str(row.transaction_id), []).append(row.type)
        for transaction_id, status in final.items():
            assert by_transaction.get(transaction_id) == [f"transaction.{status['status']}"], (
                transaction_id, status, by_transaction.get(transaction_id),
            )  # fmt: skip
        event_ids = {f"evt_{e.hex}" for e in _event_ids(ids)}
        wait_for(
            lambda: event_ids <= receiver.by_id().keys(), timeout_seconds=120,
            what=f"all {len(event_ids)} events at the receiver", log=second.log,
        )  # fmt: skip
        signer = Webhook(endpoint["secret"])
        for event_id in event_ids:
            headers, body = receiver.by_id()[event_id][0]
            signer.verify(body, headers)
        assert_ledger_consistent()
    finally:
        if beat is not None:
            beat.stop()
        receiver.stop()


def _event_ids(transaction_ids: list[str]) -> list[uuid.UUID]:
    with db.transaction() as session:
        return list(
            session.scalars(
                text("SELECT id FROM events WHERE transaction_id = ANY(:ids)"),
                {"ids": [uuid.UUID(i) for i in transaction_ids]},
            )
        )


def test_a_receiver_that_hangs_never_delays_applies_when_webhooks_run_apart(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, endpoints: Any,
) -> None:  # fmt: skip
    # The two workers as `tally serve worker` and `tally serve webhooks` run them:
    # drains on `tally` in processes, attempts on `tally.webhooks` in threads of their
    # own. Attempts may wait 60 s for this receiver, far past the test's bound: were
    # one process to serve both queues, its two pool processes would hang in
    # attempts and the deposits below would wait behind them.
    env = {**WEBHOOK_ENV, "TALLY_WEBHOOK_TIMEOUT_SECONDS": "60",
           "TALLY_WEBHOOK_ATTEMPT_LEASE_SECONDS": "180",
           "TALLY_WEBHOOK_RETRY_WINDOW_SECONDS": "300"}  # fmt: skip
    release = threading.Event()
    receiver = Receiver(hold=release)
    drains = CeleryProcess("worker", "apart-drains", queues="tally", env=env).start()
    attempts = CeleryProcess(
        "worker", "apart-hooks", queues="tally.webhooks", pool="threads", concurrency=2, env=env
    ).start()
    try:
        endpoints(receiver.url, ["transaction.completed"])
        wallet = wallet_factory()
        first = [submit(client, service_headers, deposit_body(wallet, "1.00")).get_json()["id"]
                 for _ in range(2)]  # fmt: skip
        wait_terminal(first, context=drains.log())
        # One endpoint's deliveries are sent one after another in a turn (docs/webhooks.md,
        # "Failing endpoints"), so the receiver holds one thread, or two if a second
        # message for it came: never more than the two threads there are.
        wait_for(lambda: len(receiver.requests) >= 1, timeout_seconds=60,
                 what="a webhook thread hanging in the receiver", log=attempts.log)  # fmt: skip

        later = [submit(client, service_headers, deposit_body(wallet, "1.00")).get_json()["id"]
                 for _ in range(10)]  # fmt: skip
        statuses = wait_terminal(later, timeout_seconds=40, context=drains.log())

        assert {s["status"] for s in statuses.values()} == {"completed"}
        assert not release.is_set() and 1 <= len(receiver.requests) <= 2  # still hanging
        release.set()
        wait_for(lambda: len(receiver.by_id()) == 12, timeout_seconds=60,
                 what="every event delivered once released", log=attempts.log)  # fmt: skip
    finally:
        release.set()
        attempts.stop()
        drains.stop()
        receiver.stop()
