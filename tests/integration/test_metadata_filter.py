"""``GET /v1/transactions?metadata[KEY]=VALUE`` over HTTP, and the index that serves it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event, text

from shared import db
from shared.services import transactions
from tests.helpers import deposit_body, drain_stream, submit


def deposit(client: Any, headers: dict[str, str], wallet_id: Any, metadata: dict[str, str]) -> str:
    response = submit(client, headers, {**deposit_body(wallet_id, "1.00"), "metadata": metadata})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def listed(client: Any, headers: dict[str, str], query: str) -> list[str]:
    """Return the ids of every page of ``GET /v1/transactions?{query}``, following the cursor."""
    ids: list[str] = []
    cursor = ""
    while True:
        response = client.get(f"/v1/transactions?{query}&limit=2{cursor}", headers=headers)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        ids += [t["id"] for t in page["data"]]
        if page["next_cursor"] is None:
            return ids
        cursor = f"&cursor={page['next_cursor']}"


def test_every_pair_must_match_exactly(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    a, b = wallet_factory(), wallet_factory()
    ref = str(uuid.uuid4())
    both = deposit(client, service_headers, a, {"order": ref, "source": "bank transfer"})
    other_source = deposit(client, service_headers, a, {"order": ref, "source": "card"})
    order_only = deposit(client, service_headers, b, {"order": ref})
    deposit(client, service_headers, a, {"order": ref + "x", "source": "bank transfer"})
    newest_first = [order_only, other_source, both]

    assert listed(client, service_headers, f"metadata[order]={ref}") == newest_first
    assert listed(
        client, service_headers, f"metadata[order]={ref}&metadata[source]=bank%20transfer"
    ) == [both]
    # Combined with the other filters.
    assert listed(client, service_headers, f"metadata[order]={ref}&wallet_id={a}") == [
        other_source, both,
    ]  # fmt: skip
    drain_stream()
    assert listed(client, service_headers, f"metadata[order]={ref}&status=completed&type=deposit")
    assert listed(client, service_headers, f"metadata[order]={ref}&status=pending") == []
    assert listed(client, service_headers, f"metadata[order]={ref}&metadata[none]=x") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("metadata=x", "metadata"),
        ("metadata[]=x", "metadata[]"),
        ("metadata[a][b]=x", "metadata[a][b]"),
        ("metadata[a=x", "metadata[a"),
        ("metadata[a]=1&metadata[a]=2", "metadata[a]"),
        (f"metadata[{'k' * 41}]=x", f"metadata[{'k' * 41}]"),
        (f"metadata[a]={'v' * 501}", "metadata[a]"),
    ],
)
def test_bad_filters_are_422_naming_the_parameter(
    client: Any, service_headers: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/v1/transactions?{query}", headers=service_headers)
    assert response.status_code == 422, response.get_json()
    problem = response.get_json()
    assert problem["code"] == "validation_failed"
    assert field in [e["field"] for e in problem["errors"]]


def test_the_filter_is_served_by_the_metadata_index() -> None:
    """With sequential scans off, the plan of the filter's own query must use the partial
    index ``transactions_metadata`` (a plan on this small table may still prefer a scan):
    the query says the index's predicate, ``shared.models.HAS_METADATA``."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    with db.transaction() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        event.listen(db.get_engine(), "before_cursor_execute", capture)
        try:
            transactions.list_transactions(
                session, status=None, type_=None, wallet_id=None, limit=50, cursor=None,
                metadata={"order": "o-1"},
            )  # fmt: skip
        finally:
            event.remove(db.get_engine(), "before_cursor_execute", capture)
        [(statement, parameters)] = [(q, p) for q, p in sent if "metadata @>" in q]
        driver = session.connection().connection.driver_connection
        assert driver is not None
        plan = "\n".join(
            row[0] for row in driver.execute("EXPLAIN " + statement, parameters).fetchall()
        )
    assert "transactions_metadata" in plan, plan
