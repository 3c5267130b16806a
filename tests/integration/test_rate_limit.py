"""Rate limits per API key (flask-limiter, Redis): 429 with Retry-After, per key, failing open."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared import db
from shared.services.api_keys import Role, create_api_key

LIMIT = 5


def _key(role: Role = Role.SERVICE) -> dict[str, str]:
    with db.transaction() as session:
        _, secret = create_api_key(session, role=role, name=f"limited {uuid.uuid4()}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def limited_client() -> Iterator[Any]:
    """A test client of an app whose keys may make ``LIMIT`` requests a minute."""
    from api import create_app

    limits = {"service": f"{LIMIT}/minute", "ops": f"{LIMIT}/minute"}
    yield create_app({"TESTING": True, "TALLY_RATE_LIMITS": limits}).test_client()


def test_a_key_over_its_limit_gets_429_and_another_key_does_not(limited_client: Any) -> None:
    first, second = _key(), _key()
    answers = [limited_client.get("/v1/wallets?limit=1", headers=first) for _ in range(LIMIT)]
    assert [a.status_code for a in answers] == [200] * LIMIT
    assert answers[0].headers["RateLimit-Limit"] == str(LIMIT)
    assert answers[-1].headers["RateLimit-Remaining"] == "0"
    assert 0 <= int(answers[-1].headers["RateLimit-Reset"]) <= 60
    refused = limited_client.get("/v1/wallets?limit=1", headers=first)
    assert refused.status_code == 429
    assert refused.content_type == "application/problem+json"
    assert refused.get_json()["code"] == "rate_limited" and refused.get_json()["status"] == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert limited_client.get("/v1/wallets?limit=1", headers=second).status_code == 200


def test_unauthenticated_and_meta_routes_are_not_limited(limited_client: Any) -> None:
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs") * (LIMIT + 1):
        response = limited_client.get(path)
        assert response.status_code == 200, path
        assert "RateLimit-Limit" not in response.headers
    for _ in range(LIMIT + 1):
        assert limited_client.get("/v1/wallets").status_code == 401  # 401 before any limit


def test_ops_keys_have_their_own_limit(limited_client: Any) -> None:
    ops = _key(Role.OPS)
    statuses = [limited_client.get("/v1/audit-events?limit=1", headers=ops).status_code
                for _ in range(LIMIT + 1)]  # fmt: skip
    assert statuses == [200] * LIMIT + [429]


def test_requests_pass_while_redis_is_down(limited_client: Any, redis_server: Any) -> None:
    from shared.metrics import RATE_LIMIT_STORAGE_ERRORS

    key = _key()
    before = RATE_LIMIT_STORAGE_ERRORS._value.get()
    redis_server.stop()
    try:
        statuses = [limited_client.get("/v1/wallets?limit=1", headers=key).status_code
                    for _ in range(LIMIT + 3)]  # fmt: skip
    finally:
        redis_server.start()
    assert statuses == [200] * (LIMIT + 3)  # failed open
    assert RATE_LIMIT_STORAGE_ERRORS._value.get() >= before + LIMIT + 3
    # Redis back: the limit applies again.
    statuses = [limited_client.get("/v1/wallets?limit=1", headers=key).status_code
                for _ in range(LIMIT + 1)]  # fmt: skip
    assert statuses[-1] == 429
