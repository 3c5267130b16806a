"""Webhook signing, the SSRF guard, secrets, event ids and event rendering: no I/O."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.models import Event, Transaction
from shared.rendering import Transaction as TransactionShape
from shared.services.events import _AsOf, event_public_id
from shared.services.webhook_endpoints import new_secret
from shared.services.webhook_sender import (
    DestinationNotAllowed,
    Outcome,
    UnsendableUrl,
    check_destination,
    receiver_url,
    send,
    signature_headers,
)


def test_signature_headers_verify_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    body = json.dumps({"id": "evt_1", "type": "transaction.completed", "data": {"x": 1}})
    headers = signature_headers(secret, "evt_1", body, at=dt.datetime.now(dt.UTC))
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + " ", headers)


def test_signature_follows_the_specification_by_hand() -> None:
    """HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the secret after whsec_, base64."""
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    at = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    headers = signature_headers(secret, "evt_x", "{}", at=at)
    expected = hmac.new(b"k" * 32, f"evt_x.{int(at.timestamp())}.{{}}".encode(), hashlib.sha256)
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected.digest()).decode()


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8400/",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]:8000/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://224.0.0.1/",
        "http://localhost:8400/",
    ],
)
def test_check_destination_refuses_non_public_addresses(url: str) -> None:
    with pytest.raises(DestinationNotAllowed):
        check_destination(url, allow_private_networks=False)
    check_destination(url, allow_private_networks=True)


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "http://[2001:4860:4860::8888]/"])
def test_check_destination_allows_public_addresses(url: str) -> None:
    check_destination(url, allow_private_networks=False)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://example.com/hook?x=1", b"example.com"),
        ("https://M\u00fcnchen.example/", b"xn--mnchen-3ya.example"),
        ("http://my_service:8080/", b"my_service"),
        ("http://[2001:db8::1]:8000/", b"2001:db8::1"),
        ("http://example.com./", b"example.com."),
        ("http://" + "a" * 63 + ".example/", b"a" * 63 + b".example"),
    ],
)
def test_receiver_url_encodes_the_host_the_client_connects_to(url: str, host: bytes) -> None:
    assert receiver_url(url).raw_host == host


@pytest.mark.parametrize(
    "url",
    [
        "https://\u00c3\u00db\U000ccb08]\U0007e75c\u0089",  # ']' outside an IPv6 literal
        "https://\u00c3\u00db\U000ccb08.example/",  # IDNA 2008 refuses U+CCB08
        "http://" + "a" * 64 + ".example/",  # a label over 63 octets
        "http://" + "a." * 127 + "example/",  # a name over 253 octets
        "http://a..example/",  # an empty label
        "http://xn--zz.example/",  # an A-label that does not decode
        "http://exa%20mple.example/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://example.com:port/",
        "http://u]@example.com/",
        "http://exa\x01mple.com/",
        "ftp://example.com/",
        "http:///path",
    ],
)
def test_receiver_url_refuses_what_cannot_be_sent(url: str) -> None:
    with pytest.raises(UnsendableUrl):
        receiver_url(url)


def test_send_fails_an_unsendable_url_without_raising() -> None:
    outcome = send(
        "http://" + "a" * 64 + ".example/", "{}", {}, timeout_seconds=1,
        allow_private_networks=True,
    )  # fmt: skip
    assert outcome.status_code is None and outcome.error is not None
    assert outcome.error.startswith("invalid URL")


def test_outcome_succeeds_on_2xx_only() -> None:
    assert Outcome(200, None).succeeded and Outcome(204, None).succeeded
    assert not Outcome(301, "answered 301").succeeded
    assert not Outcome(500, "answered 500").succeeded
    assert not Outcome(None, "timeout").succeeded


def test_event_public_id_is_evt_and_hex() -> None:
    event_id = uuid.uuid4()
    assert event_public_id(event_id) == f"evt_{event_id.hex}"


def test_an_event_renders_its_transaction_as_it_was() -> None:
    """The event's status, failure and times over the transaction's unchanging fields."""
    now = dt.datetime(2026, 11, 24, 1, 0, tzinfo=dt.UTC)
    transaction = Transaction(
        id=uuid.uuid4(), type="withdrawal", status="completed", amount_minor=1500,
        currency="SGD", source_wallet_id=uuid.uuid4(), destination_wallet_id=uuid.uuid4(),
        hold_id=None, legs=None, description="rent", metadata_={"k": "v"},
        failure_code=None, failure_message=None, attempts=2, created_at=now,
        updated_at=now + dt.timedelta(minutes=5), completed_at=now + dt.timedelta(minutes=5),
        expires_at=None,
    )  # fmt: skip
    event = Event(
        id=uuid.uuid4(), type="transaction.failed", transaction_id=transaction.id,
        status="failed", failure_code="insufficient_funds", failure_message="short",
        attempts=1, updated_at=now, completed_at=now, created_at=now,
    )  # fmt: skip
    data = TransactionShape.dump(_AsOf(transaction, event))
    assert data == TransactionShape.dump(transaction) | {
        "status": "failed",
        "failure_code": "insufficient_funds",
        "failure_message": "short",
        "attempts": 1,
        "updated_at": "2026-11-24T01:00:00.000000Z",
        "completed_at": "2026-11-24T01:00:00.000000Z",
    }
    assert data["amount"] == "15.00" and data["description"] == "rent"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/"},
        {"url": "http://example.com/", "events": []},
        {"url": "http://example.com/", "events": ["transaction.maybe"]},
        {"url": "http://example.com/", "secret": "whsec_chosen"},
        {"url": "http://example.com/" + "x" * 500},
    ],
)
def test_endpoint_create_refuses_bad_bodies(body: dict[str, object]) -> None:
    from pydantic import ValidationError

    from api.webhooks import EndpointCreate

    with pytest.raises(ValidationError):
        EndpointCreate.model_validate(body)


def test_endpoint_patch_needs_a_field() -> None:
    from pydantic import ValidationError

    from api.webhooks import EndpointPatch

    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({})
    assert EndpointPatch.model_validate({"status": "disabled"}).status == "disabled"


def test_the_delivery_sweep_is_on_the_beat_schedule() -> None:
    from shared.config import Settings
    from worker.schedule import beat_schedule

    schedule = beat_schedule(Settings(webhook_sweep_interval_seconds=2.5))
    assert schedule["sweep-webhook-deliveries"] == {
        "task": "tally.sweep_webhook_deliveries",
        "schedule": 2.5,
    }


def test_the_webhook_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """24 h of retries and a 10 s timeout (docs/api.md, "Webhooks"); private receivers refused unless enabled."""
    from shared.config import Settings

    for name in [n for n in os.environ if n.startswith("TALLY_WEBHOOK_")]:
        monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.webhook_retry_window_seconds >= 24 * 3600
    assert settings.webhook_timeout_seconds == 10
    assert settings.webhook_allow_private_networks is False
