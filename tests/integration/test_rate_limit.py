"""Rate limits per API key, counted in each process: 429 with Retry-After, per key, in total."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api.limits import share_of
from shared import db
from shared.services.api_keys import Role, create_api_key
from tests.servers import LOG_DIR, serve_web

LIMIT = 5


def _key(role: Role = Role.SERVICE) -> dict[str, str]:
    with db.transaction() as session:
        _, secret = create_api_key(session, role=role, name=f"limited {uuid.uuid4()}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def limited_client() -> Iterator[Any]:
    """A test client of an app whose keys may make ``LIMIT`` requests an hour.

    An hour, not a minute: a window that ended during a slow test would let a request
    through that the test expects refused.
    """
    from api import create_app

    limits = {"service": f"{LIMIT}/hour", "ops": f"{LIMIT}/hour"}
    config = {"TESTING": True, "TALLY_RATE_LIMITS": limits, "TALLY_RATE_LIMIT_PROCESSES": 1}
    yield create_app(config).test_client()


def test_a_key_over_its_limit_gets_429_and_another_key_does_not(limited_client: Any) -> None:
    first, second = _key(), _key()
    answers = [limited_client.get("/v1/wallets?limit=1", headers=first) for _ in range(LIMIT)]
    assert [a.status_code for a in answers] == [200] * LIMIT
    assert answers[0].headers["RateLimit-Limit"] == str(LIMIT)
    assert answers[-1].headers["RateLimit-Remaining"] == "0"
    assert 0 <= int(answers[-1].headers["RateLimit-Reset"]) <= 3600
    refused = limited_client.get("/v1/wallets?limit=1", headers=first)
    assert refused.status_code == 429
    assert refused.content_type == "application/problem+json"
    assert refused.get_json()["code"] == "rate_limited" and refused.get_json()["status"] == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
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


def test_limits_hold_while_redis_is_down(limited_client: Any, redis_server: Any) -> None:
    key = _key()
    redis_server.stop()
    try:
        statuses = [limited_client.get("/v1/wallets?limit=1", headers=key).status_code
                    for _ in range(LIMIT + 1)]  # fmt: skip
    finally:
        redis_server.start()
    assert statuses == [200] * LIMIT + [429]  # counted in the process: no Redis needed


def test_a_process_allows_its_share_of_the_limit_rounded_up() -> None:
    assert share_of("20000/second", 2) == "10000 per 1 second"
    assert share_of("5 per minute; 1000/hour", 3) == "2 per 1 minute; 334 per 1 hour"
    assert share_of("7/second", 1) == "7 per 1 second"


def test_a_key_gets_no_more_than_its_limit_across_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two API processes, each allowing half: whichever takes each request, 10 pass at most."""
    monkeypatch.setenv("TALLY_RATE_LIMIT_SERVICE", "10/hour")
    headers = _key()
    with serve_web(LOG_DIR, workers=2) as (url, _):
        statuses = []
        for _ in range(30):
            # A connection each, so the kernel may hand each to either process.
            request = urllib.request.Request(f"{url}/v1/wallets?limit=1", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
    assert set(statuses) <= {200, 429}
    assert 5 <= statuses.count(200) <= 10, statuses


def test_with_several_windows_the_tightest_is_shown_and_the_first_spent_refuses() -> None:
    """``3 per hour; 100 per day``: the headers name the hour's window (fewer left); the 4th is 429."""
    from api import create_app

    limits = {"service": "3/hour; 100/day", "ops": "3/hour; 100/day"}
    config = {"TESTING": True, "TALLY_RATE_LIMITS": limits, "TALLY_RATE_LIMIT_PROCESSES": 1}
    client = create_app(config).test_client()
    headers = _key()
    answers = [client.get("/v1/wallets?limit=1", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Limit"] for a in answers] == ["3"] * 4
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert "over its rate limit (3 per 1 hour)" in answers[-1].get_json()["detail"]
