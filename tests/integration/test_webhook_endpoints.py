"""Webhook endpoints and deliveries over HTTP: ops only, the secret shown once, never again.

Also the example receiver (``python -m examples.webhook_receiver``) verifies a
signed delivery and refuses a forged one, as README.md's walkthrough uses it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
import requests

from cli.devservers import free_port
from shared import db
from shared.services.events import record_run_event
from shared.services.webhook_sender import signature_headers

ENDPOINT = {"url": "http://127.0.0.1:9/hook", "description": "integration"}


def register(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhook-endpoints", json={**ENDPOINT, **body}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return dict(response.get_json())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints/{id}"),
        ("PATCH", "/v1/webhook-endpoints/{id}"),
        ("DELETE", "/v1/webhook-endpoints/{id}"),
        ("GET", "/v1/webhook-endpoints/{id}/deliveries"),
        ("POST", "/v1/webhook-deliveries/{id}/retry"),
    ],
)
def test_only_ops_keys_manage_endpoints(
    client: Any, service_headers: dict[str, str], method: str, path: str
) -> None:
    body = {"status": "disabled"} if method == "PATCH" else ENDPOINT if method == "POST" else None
    response = client.open(
        path.format(id=uuid.uuid4()), method=method, json=body, headers=service_headers
    )
    assert response.status_code == 403 and response.get_json()["code"] == "forbidden"
    assert client.open(path.format(id=uuid.uuid4()), method=method).status_code == 401


def test_the_secret_is_shown_once_and_never_again(client: Any, ops_headers: dict[str, str]) -> None:
    created = register(client, ops_headers)
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["status"] == "enabled"
    assert created["events"] == [
        "transaction.completed", "transaction.failed", "transaction.held",
        "transaction.voided", "transaction.expired", "reconciliation.mismatch",
        "reconciliation.error",
    ]  # fmt: skip
    endpoint_id = created["id"]
    with db.transaction() as session:
        record_run_event(session, uuid.uuid4(), "error")
    answers = [
        client.get("/v1/webhook-endpoints?limit=200", headers=ops_headers),
        client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers),
        client.patch(
            f"/v1/webhook-endpoints/{endpoint_id}", json={"status": "disabled"}, headers=ops_headers
        ),  # fmt: skip
        client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=ops_headers),
        client.get("/v1/events", headers=ops_headers),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert secret not in answer.get_data(as_text=True)
    for endpoint in [*answers[0].get_json()["data"], answers[1].get_json(), answers[2].get_json()]:
        assert "secret" not in endpoint
    deliveries = answers[3].get_json()["data"]
    assert len(deliveries) == 1 and deliveries[0]["status"] == "pending"
    client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers)


def test_endpoint_lifecycle(client: Any, ops_headers: dict[str, str]) -> None:
    endpoint_id = register(client, ops_headers, events=["transaction.failed"])["id"]
    patched = client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}",
        json={
            "status": "disabled",
            "events": ["transaction.completed"],
            "url": "https://8.8.8.8/hook",
        },  # fmt: skip
        headers=ops_headers,
    ).get_json()
    assert (patched["status"], patched["events"], patched["url"]) == (
        "disabled", ["transaction.completed"], "https://8.8.8.8/hook",
    )  # fmt: skip
    assert client.patch(f"/v1/webhook-endpoints/{endpoint_id}", json={},
                        headers=ops_headers).status_code == 422  # fmt: skip
    assert (
        client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers).status_code
        == 204
    )
    missing = client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers)
    assert missing.status_code == 404
    assert missing.get_json()["code"] == "webhook_endpoint_not_found"


@pytest.mark.parametrize(
    "body",
    [{"url": "ftp://example.com/x"}, {"url": "not a url"}, {"url": "http://x", "events": []},
     {"url": "http://x", "events": ["transaction.maybe"]}, {"url": "http://x", "secret": "s"}],
)  # fmt: skip
def test_bad_endpoints_are_refused(
    client: Any, ops_headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/v1/webhook-endpoints", json=body, headers=ops_headers)
    assert response.status_code == 422, response.get_data(as_text=True)


def test_private_receivers_are_refused_unless_allowed(
    client: Any, ops_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import Settings

    settings = Settings(webhook_allow_private_networks=False)
    monkeypatch.setattr("api.webhooks.get_settings", lambda: settings)
    response = client.post("/v1/webhook-endpoints", json={"url": "http://169.254.169.254/"},
                           headers=ops_headers)  # fmt: skip
    assert response.status_code == 422 and response.get_json()["code"] == "webhook_url_not_allowed"


def test_retry_makes_a_delivery_due_now(client: Any, ops_headers: dict[str, str]) -> None:
    endpoint_id = register(client, ops_headers)["id"]
    with db.transaction() as session:
        record_run_event(session, uuid.uuid4(), "error")
    [delivery] = client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
                            headers=ops_headers).get_json()["data"]  # fmt: skip
    response = client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=ops_headers)
    assert response.status_code == 202
    assert response.get_json()["status"] == "pending" and response.get_json()["next_attempt_at"]
    unknown = client.post(f"/v1/webhook-deliveries/{uuid.uuid4()}/retry", headers=ops_headers)
    assert unknown.status_code == 404
    client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=ops_headers)


def test_the_example_receiver_verifies_and_prints_events() -> None:
    from shared.services.webhook_endpoints import new_secret

    secret, port = new_secret(), free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "examples.webhook_receiver", "--port", str(port), "--secret", secret],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert receiver.stdout is not None
        assert "listening" in receiver.stdout.readline()
        body = json.dumps({"id": "evt_1", "type": "transaction.completed",
                           "data": {"id": "t1", "status": "completed", "failure_code": None}})  # fmt: skip
        headers = signature_headers(secret, "evt_1", body, at=dt.datetime.now(dt.UTC))
        url = f"http://127.0.0.1:{port}/"
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 204
        assert receiver.stdout.readline().split() == [
            "transaction.completed",
            "t1",
            "completed",
            "None",
        ]
        forged = {**headers, "webhook-signature": "v1,AAAA"}
        assert requests.post(url, data=body, headers=forged, timeout=5).status_code == 400
        assert receiver.stdout.readline().startswith("rejected:")
    finally:
        receiver.terminate()
        receiver.wait(10)
