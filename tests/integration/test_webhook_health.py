"""Failing endpoints: paused, probed, disabled with an audit record; attempts bounded per endpoint.

Attempts are made in-process by ``deliver_endpoint`` and ``attempt_delivery``
on the real database and Redis; receivers are a closed loopback port (connection refused) or a
real HTTP server that holds its answers. No worker process is needed: what
is tested is the claim, the record and the sweep's query.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select

import broker
from cli.devservers import free_port
from shared import db
from shared.config import get_settings
from shared.models import AuditEvent, WebhookDelivery, WebhookEndpoint
from shared.services.deliveries import Policy, attempt_delivery, deliver_endpoint, due_endpoints
from shared.services.endpoint_slots import EndpointSlots, slots_key
from shared.services.events import record_run_event
from shared.services.webhook_endpoints import new_secret
from tests.helpers import wait_for

#: Failures are retried at once (no backoff) and disable after 3 in a row.
FAST = dataclasses.replace(
    Policy.from_settings(get_settings()),
    backoff_base_seconds=0.0,
    backoff_max_seconds=0.0,
    disable_after_failures=3,
    disable_after_seconds=0.0,
    timeout_seconds=5.0,
)


@pytest.fixture
def endpoint() -> Iterator[Any]:
    """Yield ``make(url) -> endpoint id``: an enabled endpoint for reconciliation.error only."""
    made: list[uuid.UUID] = []

    def make(url: str) -> uuid.UUID:
        with db.transaction() as session:
            row = WebhookEndpoint(
                id=uuid.uuid4(), url=url, event_types=["reconciliation.error"], secret=new_secret()
            )
            session.add(row)
        made.append(row.id)
        return row.id

    yield make
    with db.transaction() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id.in_(made)))


def new_deliveries(endpoint_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Record ``count`` events; return the endpoint's deliveries of them, oldest first."""
    with db.transaction() as session:
        for _ in range(count):
            record_run_event(session, uuid.uuid4(), "error")
    with db.transaction() as session:
        return list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.endpoint_id == endpoint_id)
                .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
            )
        )[-count:]


def endpoint_row(endpoint_id: uuid.UUID) -> WebhookEndpoint:
    with db.transaction() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        session.expunge(row)
        return row


def dead_url() -> str:
    """Return a URL on a loopback port nothing listens on: every attempt is refused."""
    return f"http://127.0.0.1:{free_port()}/hook"


def disabled_count() -> float:
    return REGISTRY.get_sample_value("tally_webhook_endpoints_disabled_total") or 0.0


def test_an_endpoint_failing_past_both_thresholds_is_disabled_audited_and_counted(
    client: Any, ops_headers: dict[str, str], endpoint: Any
) -> None:
    endpoint_id = endpoint(dead_url())
    first, second, third = new_deliveries(endpoint_id, 3)
    before = disabled_count()
    assert attempt_delivery(first, policy=FAST) == "pending"
    assert attempt_delivery(second, policy=FAST) == "pending"
    row = endpoint_row(endpoint_id)
    assert (row.status, row.consecutive_failures) == ("enabled", 2)
    assert row.failing_since is not None and row.paused_until is not None
    assert disabled_count() == before

    assert attempt_delivery(third, policy=FAST) == "pending"
    row = endpoint_row(endpoint_id)
    assert (row.status, row.consecutive_failures, row.paused_until) == ("disabled", 3, None)
    assert row.disabled_reason is not None and "3 attempts in a row failed" in row.disabled_reason
    assert disabled_count() == before + 1
    with db.transaction() as session:
        [record] = session.scalars(
            select(AuditEvent).where(AuditEvent.target_ids.contains([endpoint_id]))
        )
        assert (record.action, record.actor_type) == ("webhook_endpoint.disable", "system")
        assert record.details["consecutive_failures"] == 3
        assert record.details["last_error"].startswith("ConnectError")
    audited = client.get(
        f"/v1/audit-events?action=webhook_endpoint.disable&target_id={endpoint_id}",
        headers=ops_headers,
    )
    assert audited.status_code == 200
    assert audited.get_json()["data"][0]["actor"] == {
        "type": "system", "api_key_id": None, "name": "webhook delivery",
    }  # fmt: skip
    # Its pending deliveries wait: a disabled endpoint's are neither claimed nor swept.
    assert attempt_delivery(first, policy=FAST) is None
    with db.transaction() as session:
        assert endpoint_id not in due_endpoints(session)

    enabled = client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", json={"status": "enabled"}, headers=ops_headers
    )
    assert enabled.status_code == 200
    assert (enabled.get_json()["status"], enabled.get_json()["disabled_reason"]) == (
        "enabled", None,
    )  # fmt: skip
    row = endpoint_row(endpoint_id)
    assert (row.consecutive_failures, row.failing_since, row.paused_until) == (0, None, None)
    # The count starts again: one more failure does not disable it.
    assert attempt_delivery(first, policy=FAST) == "pending"
    assert endpoint_row(endpoint_id).status == "enabled"


def test_one_threshold_alone_does_not_disable(endpoint: Any) -> None:
    """Many failures within the period, as a deploy's restart makes, leave it enabled."""
    endpoint_id = endpoint(dead_url())
    patient = dataclasses.replace(FAST, disable_after_seconds=3600.0)
    for delivery_id in new_deliveries(endpoint_id, 4):
        assert attempt_delivery(delivery_id, policy=patient) == "pending"
    row = endpoint_row(endpoint_id)
    assert (row.status, row.consecutive_failures) == ("enabled", 4)


def test_a_failing_endpoint_is_paused_then_probed_with_one_delivery(
    redis_client: Any, endpoint: Any
) -> None:
    endpoint_id = endpoint(dead_url())
    paused = dataclasses.replace(FAST, backoff_base_seconds=3600.0, backoff_max_seconds=3600.0)
    slots = EndpointSlots(redis_client, limit=4, lease_seconds=60)
    ids = new_deliveries(endpoint_id, 4)
    republished: list[uuid.UUID] = []
    # A turn stops at the first failure: one attempt, then the endpoint is paused.
    assert deliver_endpoint(endpoint_id, policy=paused, slots=slots,
                            republish=republished.extend) == 1  # fmt: skip
    assert deliver_endpoint(endpoint_id, policy=paused, slots=slots,
                            republish=republished.extend) == 0  # fmt: skip
    assert [attempt_delivery(d, policy=paused) for d in ids] == [None] * 4
    with db.transaction() as session:
        assert endpoint_id not in due_endpoints(session)
        counts = session.scalars(
            select(WebhookDelivery.attempts)
            .where(WebhookDelivery.id.in_(ids))
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        ).all()
        assert counts == [1, 0, 0, 0]
        # The pause ends: the sweep publishes the endpoint again, for its probe.
        session.execute(
            WebhookEndpoint.__table__.update()
            .where(WebhookEndpoint.id == endpoint_id)
            .values(paused_until=None)
        )
        assert endpoint_id in due_endpoints(session)
    assert republished == []


def turns_queued(redis_client: Any, endpoint_id: uuid.UUID) -> int:
    """Return how many turns at ``endpoint_id`` wait in the webhooks queue."""
    queued = redis_client.lrange(broker.WEBHOOKS_QUEUE, 0, -1)
    return sum(str(endpoint_id).encode() in message for message in queued)


def test_new_deliveries_of_a_paused_endpoint_wait_for_the_pause(
    endpoint: Any, redis_client: Any
) -> None:
    endpoint_id = endpoint(dead_url())
    [first, _] = new_deliveries(endpoint_id, 2)
    assert turns_queued(redis_client, endpoint_id) == 1  # the endpoint, once, not each delivery
    paused = dataclasses.replace(FAST, backoff_base_seconds=3600.0, backoff_max_seconds=3600.0)
    assert attempt_delivery(first, policy=paused) == "pending"
    redis_client.delete(broker.endpoint_signal_key(endpoint_id))  # no turn is queued any more
    [later] = new_deliveries(endpoint_id, 1)
    assert turns_queued(redis_client, endpoint_id) == 1  # none for a paused endpoint
    with db.transaction() as session:
        delivery = session.get(WebhookDelivery, later)
        assert delivery is not None and delivery.next_attempt_at is not None
        assert delivery.next_attempt_at == endpoint_row(endpoint_id).paused_until


def test_a_turn_sends_every_due_delivery_and_a_success_resets_the_failures(
    redis_client: Any, endpoint: Any
) -> None:
    answers = iter([500] + [204] * 3)
    server = _server(lambda: next(answers))
    slots = EndpointSlots(redis_client, limit=4, lease_seconds=60)
    try:
        endpoint_id = endpoint(server.url)
        ids = new_deliveries(endpoint_id, 3)
        republished: list[uuid.UUID] = []
        assert deliver_endpoint(endpoint_id, policy=FAST, slots=slots,
                                republish=republished.extend) == 1  # fmt: skip
        assert endpoint_row(endpoint_id).consecutive_failures == 1
        # No backoff in FAST: the pause is over, and the next turn sends all three.
        assert deliver_endpoint(endpoint_id, policy=FAST, slots=slots,
                                republish=republished.extend) == 3  # fmt: skip
        row = endpoint_row(endpoint_id)
        assert (row.consecutive_failures, row.failing_since, row.paused_until) == (0, None, None)
        with db.transaction() as session:
            statuses = session.scalars(
                select(WebhookDelivery.status).where(WebhookDelivery.id.in_(ids))
            ).all()
        assert statuses == ["succeeded"] * 3 and republished == []
        assert slots.held(endpoint_id) == 0
    finally:
        server.stop()
        redis_client.delete(slots_key(endpoint_id))


def test_a_turn_hands_over_after_its_time(redis_client: Any, endpoint: Any) -> None:
    server = _server(lambda: 204)
    slots = EndpointSlots(redis_client, limit=4, lease_seconds=60)
    try:
        endpoint_id = endpoint(server.url)
        ids = new_deliveries(endpoint_id, 25)
        republished: list[uuid.UUID] = []
        made = deliver_endpoint(endpoint_id, policy=FAST, slots=slots,
                                republish=republished.extend, turn_seconds=0)  # fmt: skip
        # One batch (20), then a new message for the rest, behind the other endpoints'.
        assert (made, republished) == (20, [endpoint_id])
        with db.transaction() as session:
            pending = session.scalars(
                select(WebhookDelivery.id).where(
                    WebhookDelivery.id.in_(ids), WebhookDelivery.status == "pending"
                )
            ).all()
        assert len(pending) == 5
    finally:
        server.stop()
        redis_client.delete(slots_key(endpoint_id))


def test_endpoint_slots_bound_holders_and_expire(redis_client: Any) -> None:
    endpoint_id, holders = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    slots = EndpointSlots(redis_client, limit=2, lease_seconds=60)
    assert [slots.acquire(endpoint_id, h) for h in holders] == [True, True, False]
    slots.release(endpoint_id, holders[0])
    assert slots.acquire(endpoint_id, holders[2])
    assert slots.held(endpoint_id) == 2
    brief = EndpointSlots(redis_client, limit=1, lease_seconds=0.05)
    other = uuid.uuid4()
    assert brief.acquire(other, holders[0])
    wait_for(lambda: brief.acquire(other, holders[1]), timeout_seconds=30, what="expired slot")
    redis_client.delete(slots_key(endpoint_id), slots_key(other))


def test_attempts_in_flight_to_one_endpoint_are_bounded(redis_client: Any, endpoint: Any) -> None:
    """Two slots: two turns hang in the receiver; six more turns end at once, sending nothing."""
    release = threading.Event()
    server = _server(lambda: 204, hold=release)
    slots = EndpointSlots(redis_client, limit=2, lease_seconds=60)
    patient = dataclasses.replace(FAST, timeout_seconds=120.0)
    try:
        endpoint_id = endpoint(server.url)
        with ThreadPoolExecutor(8) as pool:

            def turn() -> Any:
                return pool.submit(
                    deliver_endpoint, endpoint_id, policy=patient, slots=slots,
                    republish=lambda _: None,
                )  # fmt: skip

            try:
                ids = new_deliveries(endpoint_id, 1)
                futures = [turn()]
                wait_for(lambda: len(server.requests) == 1, timeout_seconds=60,
                         what="the first turn at the receiver")  # fmt: skip
                ids += new_deliveries(endpoint_id, 3)
                futures += [turn() for _ in range(7)]
                wait_for(
                    lambda: sum(f.done() for f in futures) == 6 and len(server.requests) == 2,
                    timeout_seconds=60, what="two turns at the receiver, six refused a slot",
                )  # fmt: skip
                assert [f.result() for f in futures if f.done()] == [0] * 6
                assert slots.held(endpoint_id) == 2
            finally:
                release.set()
            assert sum(f.result() for f in futures) == 4
        assert server.in_flight_max == 2
        with db.transaction() as session:
            statuses = session.scalars(
                select(WebhookDelivery.status).where(WebhookDelivery.id.in_(ids))
            ).all()
        assert statuses == ["succeeded"] * 4 and slots.held(endpoint_id) == 0
    finally:
        release.set()
        server.stop()
        redis_client.delete(slots_key(endpoint_id))


class _Server:
    """A loopback receiver answering ``status()``; with ``hold``, only once it is set.

    Notes the bodies it got and the most requests it had in flight at once.
    """

    def __init__(self, status: Any, hold: threading.Event | None) -> None:
        self.requests: list[bytes] = []
        self.in_flight_max = 0
        in_flight, lock, server = [0], threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    server.requests.append(body)
                    in_flight[0] += 1
                    server.in_flight_max = max(server.in_flight_max, in_flight[0])
                if hold is not None:
                    hold.wait(120)
                with lock:
                    in_flight[0] -= 1
                self.send_response(status())
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/hook"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _server(status: Any, *, hold: threading.Event | None = None) -> _Server:
    return _Server(status, hold)
