"""Authentication, roles, health, readiness and metrics."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/v1/wallets"), ("post", "/v1/transactions"), ("get", f"/v1/transactions/{uuid.uuid4()}"),
     ("post", f"/v1/transactions/{uuid.uuid4()}/retry"), ("patch", f"/v1/wallets/{uuid.uuid4()}")],
)  # fmt: skip
def test_v1_needs_a_known_key(client: Any, headers: dict[str, str], method: str, path: str) -> None:
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthenticated"
    assert response.content_type == "application/problem+json"


def test_keys_create_prints_a_working_key(client: Any) -> None:
    from click.testing import CliRunner

    from cli.main import main

    result = CliRunner().invoke(main, ["keys", "create", "--role", "service", "--name", "cli"])
    assert result.exit_code == 0, result.output
    secret = result.output.split("secret: ")[1].strip()
    response = client.get("/v1/wallets?limit=1", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200


def test_healthz_readyz_metrics_need_no_key(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and b"tally_transactions_settled_total" in metrics.data


def test_unknown_route_and_method_are_problem_json(
    client: Any, service_headers: dict[str, str]
) -> None:
    missing = client.get("/v1/nothing-here", headers=service_headers)
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"
    wrong = client.delete("/v1/wallets", headers=service_headers)
    assert wrong.status_code == 405 and wrong.get_json()["code"] == "method_not_allowed"
