"""The ``tally`` command's ops verbs, run in-process with click's runner against the real servers."""

from __future__ import annotations

import uuid
from typing import Any

from click.testing import CliRunner

import broker
from cli.main import main
from tests.helpers import drain_stream, submit
from tests.integration.test_batch_submission import signal_cleared


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_keys_revoke_stops_a_key(client: Any) -> None:
    created = run("keys", "create", "--role", "service", "--name", "to-revoke")
    key_id = created.output.split("id:")[1].split()[0]
    secret = created.output.split("secret: ")[1].strip()
    assert run("keys", "revoke", key_id).exit_code == 0
    response = client.get("/v1/wallets?limit=1", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    again = run("keys", "revoke", key_id)
    assert again.exit_code != 0 and "no live key" in again.output


def test_retry_reopens_a_failed_transaction_and_publishes_it(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, redis_client: Any
) -> None:
    wallet_id = wallet_factory()
    body = {
        "type": "withdrawal",
        "amount": "1.00",
        "currency": "SGD",
        "source_wallet_id": str(wallet_id),
    }
    transaction_id = submit(client, service_headers, body).get_json()["id"]
    drain_stream()
    signal_cleared(redis_client)
    result = run("retry", transaction_id)
    assert result.exit_code == 0, result.output
    assert "pending" in result.output
    assert redis_client.exists(broker.STREAM_SIGNAL_KEY)  # published through the broker
    again = run("retry", transaction_id)
    assert again.exit_code != 0 and "not_retryable" in again.output
    assert run("retry", str(uuid.uuid4())).exit_code != 0
