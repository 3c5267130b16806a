"""A pool with every connection busy answers 503 with Retry-After, never a 500, and records nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from shared import db
from shared.config import get_settings
from tests.helpers import deposit_body


def test_reads_and_submissions_answer_503_while_the_pool_is_busy(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    key = str(uuid.uuid4())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALLY_DB_POOL_SIZE", "1")
        patch.setenv("TALLY_DB_POOL_TIMEOUT_SECONDS", "0.2")
        get_settings.cache_clear()
        db.reset_engine()
        held = db.get_engine().connect()
        try:
            read = client.get(f"/v1/wallets/{wallet}", headers=service_headers)
            submitted = client.post(
                "/v1/transactions",
                json=deposit_body(wallet, "1.00"),
                headers={**service_headers, "Idempotency-Key": key},
            )
        finally:
            held.close()
    get_settings.cache_clear()
    db.reset_engine()
    for response in (read, submitted):
        assert response.status_code == 503, response.get_json()
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "service_unavailable"
        assert response.headers["Retry-After"] == "1"
    with db.transaction() as session:
        recorded = session.execute(
            text("SELECT count(*) FROM transactions WHERE idempotency_key = :key"), {"key": key}
        ).scalar_one()
    assert recorded == 0
