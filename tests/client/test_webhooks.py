"""``tally_client.webhooks.verify`` on real deliveries: a real worker signs and POSTs them.

A delivery verifies with its endpoint's secret and yields the typed event; the
same delivery with a changed body, another secret or a timestamp older than
the specification's five minutes does not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook
from tally_client import Tally, Transaction, WebhookVerificationError, webhooks

from tests.helpers import wait_for
from tests.pipeline.test_webhooks import Receiver

pytestmark = pytest.mark.pipeline


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Run a webhook receiver on loopback that records every request."""
    hooks = Receiver()
    yield hooks
    hooks.stop()


def _delivery(
    tally: Tally, tally_ops: Tally, receiver: Receiver, wallet_id: Any
) -> tuple[dict[str, str], bytes, str, Transaction]:
    """Register ``receiver``, apply a deposit; return a delivery's headers and body, the secret
    and the deposit."""
    endpoint = tally_ops.webhook_endpoints.create(receiver.url, events=["transaction.completed"])
    deposit = tally.transactions.wait(tally.transactions.deposit("2.00", "SGD", wallet_id).id)
    wait_for(lambda: receiver.requests, timeout_seconds=120, what="a delivery")
    headers, body = receiver.requests[0]
    return headers, body, endpoint.secret, deposit


def test_verify_returns_the_event_and_refuses_a_tampered_or_old_delivery(
    worker: Any, tally: Tally, tally_ops: Tally, receiver: Receiver, wallet_factory: Any
) -> None:
    headers, body, secret, deposit = _delivery(tally, tally_ops, receiver, wallet_factory())

    event = webhooks.verify(body, headers, secret)
    assert event.type == "transaction.completed" and event.id == headers["webhook-id"]
    assert isinstance(event.data, Transaction)
    assert (event.data.id, event.data.status) == (deposit.id, "completed")
    assert (
        webhooks.verify(body.decode(), {k.upper(): v for k, v in headers.items()}, secret) == event
    )

    tampered = body.replace(b'"2.00"', b'"200.00"')
    assert tampered != body
    with pytest.raises(WebhookVerificationError, match="signature"):
        webhooks.verify(tampered, headers, secret)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(body, headers, "whsec_" + "A" * 32)

    # Correctly signed, but six minutes ago: a replayed capture of an old delivery.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    old_headers = headers | {
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": Webhook(secret).sign(headers["webhook-id"], old, body.decode()),
    }
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhooks.verify(body, old_headers, secret)
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        with pytest.raises(WebhookVerificationError):
            webhooks.verify(body, {k: v for k, v in headers.items() if k != missing}, secret)
    with pytest.raises(WebhookVerificationError):
        webhooks.verify(body, headers | {"webhook-signature": "garbage"}, secret)


def test_retry_delivery_sends_the_same_event_again(
    worker: Any, tally: Tally, tally_ops: Tally, receiver: Receiver, wallet_factory: Any
) -> None:
    headers, _, secret, _ = _delivery(tally, tally_ops, receiver, wallet_factory())
    (endpoint,) = [e for e in tally_ops.webhook_endpoints.list() if e.url == receiver.url]
    delivery = wait_for(
        lambda: next(tally_ops.webhook_endpoints.deliveries(endpoint.id, status="succeeded"), None),
        timeout_seconds=120,
        what="a succeeded delivery",
    )
    assert delivery.event_id == headers["webhook-id"]
    assert tally_ops.webhook_endpoints.retry_delivery(delivery.id).id == delivery.id
    wait_for(lambda: len(receiver.requests) >= 2, timeout_seconds=120, what="the delivery again")
    again_headers, again_body = receiver.requests[1]
    assert webhooks.verify(again_body, again_headers, secret).id == headers["webhook-id"]
