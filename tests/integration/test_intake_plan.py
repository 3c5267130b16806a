"""The intake's statement finds each named wallet by its primary key, however many wallets exist.

``shared.services.intake._RECORD_SQL`` reads its items with ``jsonb_to_recordset``,
for which the planner guesses 100 rows. Written as joins, that guess made it hash
the whole wallets table for every statement (docs/benchmarks.md, series 18): a
cost that grows with the number of wallets on every submission.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text

from shared import db
from shared.services import intake

#: Enough wallets that a scan of the table costs the planner more than 100 primary-key lookups.
WALLETS = 5000


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Return ``plan`` and every node under it."""
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


def test_the_intake_statement_reads_wallets_by_primary_key_only() -> None:
    with db.transaction() as session:  # rolled back: the wallets are only for the planner
        session.execute(
            text(
                "INSERT INTO wallets (id, owner_ref, currency) "
                "SELECT gen_random_uuid(), 'plan-' || n || '-' || :run, 'SGD' "
                "FROM generate_series(1, :count) AS n"
            ),
            {"run": uuid.uuid4().hex, "count": WALLETS},
        )
        session.execute(text("ANALYZE wallets"))
        item = {
            "id": str(uuid.uuid4()), "type": "transfer", "amount_minor": 1, "currency": "SGD",
            "source_id": str(uuid.uuid4()), "destination_id": str(uuid.uuid4()),
            "lane_id": str(uuid.uuid4()), "description": None, "metadata": {},
            "api_key_id": str(uuid.uuid4()), "idempotency_key": "plan", "request_hash": "x",
            "expires_at": None, "request_id": None, "scheduled_at": None, "ordinal": 0,
        }  # fmt: skip
        driver = session.connection().connection.driver_connection
        assert driver is not None
        [(plan,)] = driver.execute(
            "EXPLAIN (FORMAT JSON) " + intake._RECORD_SQL, (json.dumps([item]),)
        ).fetchall()
        session.rollback()
    scans = [
        (node["Node Type"], node.get("Index Name"))
        for node in _nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "wallets"
    ]
    assert scans, "the statement reads no wallet"
    assert all(node_type == "Index Scan" for node_type, _ in scans), scans
