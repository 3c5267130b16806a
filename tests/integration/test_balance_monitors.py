"""Balance monitors over HTTP, evaluated by the real apply path in-process.

CRUD and its refusals; evaluation at creation; trigger and clear by deposits,
withdrawals, holds and voids, each change appending one event in the commit
that made it and none while the condition stays; and the cost: one statement
per apply batch, not one per transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from shared import db
from tests.helpers import deposit_body, drain_stream, submit


@pytest.fixture(autouse=True)
def empty_backlog() -> Iterator[None]:
    drain_stream()
    yield


def create(client: Any, headers: dict[str, str], wallet: Any, **fields: Any) -> Any:
    body = {"wallet_id": str(wallet), "field": "balance", "operator": "lt", "value": "50.00"}
    return client.post("/v1/balance-monitors", json=body | fields, headers=headers)


def monitor(client: Any, headers: dict[str, str], monitor_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/balance-monitors/{monitor_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.get_json())


def monitor_events(client: Any, headers: dict[str, str], monitor_id: str) -> list[dict[str, Any]]:
    """Return the monitor's events, oldest first."""
    found = []
    for type_ in ("balance_monitor.triggered", "balance_monitor.cleared"):
        response = client.get(f"/v1/events?type={type_}&limit=200", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        found += [
            e for e in response.get_json()["data"] if e["data"]["monitor"]["id"] == monitor_id
        ]
    return sorted(found, key=lambda e: e["created_at"])


def applied(client: Any, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = submit(client, headers, body)
    assert response.status_code == 202, response.get_data(as_text=True)
    drain_stream()
    return str(response.get_json()["id"])


def withdrawal(wallet: Any, amount: str) -> dict[str, Any]:
    return {"type": "withdrawal", "amount": amount, "currency": "SGD",
            "source_wallet_id": str(wallet)}  # fmt: skip


def test_monitor_crud(client: Any, service_headers: dict[str, str], wallet_factory: Any) -> None:
    wallet = wallet_factory()
    response = create(client, service_headers, wallet, description="top up", value="10.5")
    assert response.status_code == 201, response.get_data(as_text=True)
    created = response.get_json()
    assert response.headers["Location"] == f"/v1/balance-monitors/{created['id']}"
    assert created == {
        "id": created["id"], "wallet_id": str(wallet), "field": "balance", "operator": "lt",
        "value": "10.50", "description": "top up", "state": "triggered",
        "triggered_at": created["triggered_at"], "created_at": created["created_at"],
    }  # fmt: skip
    assert monitor(client, service_headers, created["id"]) == created
    other = create(client, service_headers, wallet, operator="gte", value="0").get_json()
    assert other["value"] == "0.00" and other["state"] == "triggered"
    page = client.get(f"/v1/balance-monitors?wallet_id={wallet}&limit=1", headers=service_headers)
    first = page.get_json()
    assert [m["id"] for m in first["data"]] == [other["id"]] and first["next_cursor"]
    rest = client.get(
        f"/v1/balance-monitors?wallet_id={wallet}&cursor={first['next_cursor']}",
        headers=service_headers,
    ).get_json()
    assert [m["id"] for m in rest["data"]] == [created["id"]] and rest["next_cursor"] is None
    path = f"/v1/balance-monitors/{created['id']}"
    assert client.delete(path, headers=service_headers).status_code == 204
    gone = client.get(path, headers=service_headers)
    assert (gone.status_code, gone.get_json()["code"]) == (404, "balance_monitor_not_found")
    again = client.delete(path, headers=service_headers)
    assert (again.status_code, again.get_json()["code"]) == (404, "balance_monitor_not_found")


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"field": "held_balance"}, "field"), ({"operator": "eq"}, "operator"),
     ({"value": "1e3"}, "value"), ({"value": "10.505"}, "value"), ({"value": 10}, "value"),
     ({"value": "-0"}, "value"), ({"value": "0.000"}, "value"), ({"wallet_id": "nope"}, "wallet_id"),
     ({"extra": 1}, "extra"), ({"description": "x" * 501}, "description")],
)  # fmt: skip
def test_create_refuses_bad_fields(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, fields: Any, field: str
) -> None:
    response = create(client, service_headers, wallet_factory(), **fields)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in {e["field"] for e in response.get_json()["errors"]}


def test_value_has_the_wallets_minor_unit(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    response = create(client, service_headers, wallet_factory("JPY"), value="100.5")
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["value"]
    negative = create(client, service_headers, wallet_factory("JPY"), value="-100")
    assert negative.status_code == 201 and negative.get_json()["value"] == "-100"


def test_unknown_wallet_and_ids_are_404(client: Any, service_headers: dict[str, str]) -> None:
    response = create(client, service_headers, uuid.uuid4())
    assert (response.status_code, response.get_json()["code"]) == (404, "wallet_not_found")
    for path in ("not-a-uuid", str(uuid.uuid4())):
        got = client.get(f"/v1/balance-monitors/{path}", headers=service_headers)
        assert (got.status_code, got.get_json()["code"]) == (404, "balance_monitor_not_found")


def test_monitors_need_a_key(client: Any) -> None:
    assert client.get("/v1/balance-monitors").status_code == 401


def test_evaluated_at_creation(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    applied(client, service_headers, deposit_body(wallet, "100.00"))
    clear = create(client, service_headers, wallet, value="100.00").get_json()
    assert (clear["state"], clear["triggered_at"]) == ("clear", None)
    assert monitor_events(client, service_headers, clear["id"]) == []
    hit = create(client, service_headers, wallet, operator="lte", value="100.00").get_json()
    assert hit["state"] == "triggered" and hit["triggered_at"]
    [triggered] = monitor_events(client, service_headers, hit["id"])
    assert triggered["type"] == "balance_monitor.triggered"
    assert triggered["data"] == {"monitor": hit, "currency": "SGD", "balance": "100.00",
                                 "available_balance": "100.00", "transaction_id": None}  # fmt: skip


def test_deposits_and_withdrawals_trigger_and_clear_edge_triggered(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    low = create(client, service_headers, wallet, value="50.00").get_json()
    assert low["state"] == "triggered"  # 0.00 < 50.00 from the start
    first = applied(client, service_headers, deposit_body(wallet, "80.00"))
    assert monitor(client, service_headers, low["id"])["state"] == "clear"
    applied(client, service_headers, deposit_body(wallet, "5.00"))  # still clear: no event
    crossing = applied(client, service_headers, withdrawal(wallet, "40.00"))  # 45.00
    applied(client, service_headers, withdrawal(wallet, "1.00"))  # still triggered: no event
    now = monitor(client, service_headers, low["id"])
    assert now["state"] == "triggered" and now["triggered_at"] > low["triggered_at"]
    history = monitor_events(client, service_headers, low["id"])
    assert [e["type"] for e in history] == [
        "balance_monitor.triggered", "balance_monitor.cleared", "balance_monitor.triggered",
    ]  # fmt: skip
    assert [e["data"]["transaction_id"] for e in history] == [None, first, crossing]
    assert [(e["data"]["balance"], e["data"]["monitor"]["state"]) for e in history] == [
        ("0.00", "triggered"), ("80.00", "clear"), ("45.00", "triggered"),
    ]  # fmt: skip
    assert history[1]["data"]["monitor"]["triggered_at"] is None
    # The crossing transaction's own events list the monitor's event too.
    by_transaction = client.get(f"/v1/events?transaction_id={crossing}", headers=service_headers)
    assert {e["type"] for e in by_transaction.get_json()["data"]} == {
        "transaction.completed", "balance_monitor.triggered"}  # fmt: skip


def test_hold_and_void_move_the_available_balance_monitor_only(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    applied(client, service_headers, deposit_body(wallet, "100.00"))
    available = create(client, service_headers, wallet, field="available_balance",
                       operator="lt", value="70.00").get_json()  # fmt: skip
    balance = create(client, service_headers, wallet, operator="lt", value="70.00").get_json()
    hold = applied(client, service_headers, {"type": "hold", "amount": "40.00", "currency": "SGD",
                                             "source_wallet_id": str(wallet)})  # fmt: skip
    assert monitor(client, service_headers, available["id"])["state"] == "triggered"
    assert monitor(client, service_headers, balance["id"])["state"] == "clear"
    void = client.post(f"/v1/transactions/{hold}/void",
                       headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
    assert void.status_code == 202
    drain_stream()
    assert monitor(client, service_headers, available["id"])["state"] == "clear"
    history = monitor_events(client, service_headers, available["id"])
    assert [(e["type"], e["data"]["transaction_id"], e["data"]["available_balance"])
            for e in history] == [("balance_monitor.triggered", hold, "60.00"),
                                  ("balance_monitor.cleared", void.get_json()["id"], "100.00")]  # fmt: skip
    assert monitor_events(client, service_headers, balance["id"]) == []


def test_one_batch_of_crossings_names_the_last_transaction_on_the_wallet(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallet = wallet_factory()
    high = create(client, service_headers, wallet, operator="gte", value="30.00").get_json()
    ids = [submit(client, service_headers, deposit_body(wallet, "20.00")).get_json()["id"]
           for _ in range(3)]  # fmt: skip
    drain_stream()  # one batch: 0 -> 60.00, crossing once
    [triggered] = monitor_events(client, service_headers, high["id"])
    assert triggered["data"]["transaction_id"] == ids[-1]
    assert triggered["data"]["balance"] == "60.00"


def test_a_service_key_sees_only_its_own_monitors_events(
    client: Any, service_headers: dict[str, str], ops_headers: dict[str, str],
    wallet_factory: Any,
) -> None:  # fmt: skip
    wallet = wallet_factory()
    created = create(client, ops_headers, wallet).get_json()
    assert monitor_events(client, ops_headers, created["id"])
    assert monitor_events(client, service_headers, created["id"]) == []
    assert monitor(client, service_headers, created["id"])["id"] == created["id"]


def test_apply_batch_issues_one_monitor_statement_not_one_per_transaction(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    wallets = [wallet_factory() for _ in range(10)]
    for wallet in wallets:
        create(client, service_headers, wallet, operator="gte", value="0.50")
    for index in range(100):
        body = deposit_body(wallets[index % 10], "0.10")
        assert submit(client, service_headers, body).status_code == 202
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = db.get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        report = drain_stream(batch_size=1000)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert report.settled == 100
    monitor_statements = [s for s in statements if "UPDATE balance_monitors" in s]
    # One per committed batch (a batch of 100 here), never one per transaction.
    assert len(monitor_statements) == report.batches == 1, (len(statements), report)
    with db.transaction() as session:
        states = session.execute(
            text("SELECT state, count(*) FROM balance_monitors WHERE wallet_id = ANY(:ids) "
                 "GROUP BY state"), {"ids": wallets}).all()  # fmt: skip
    assert dict(states) == {"triggered": 10}  # 1.00 >= 0.50 on every wallet


def test_sql_condition_agrees_with_the_pure_rule() -> None:
    """The apply path's SQL condition (built from the same table) gives the pure rule's answer."""
    import itertools

    from shared.ledger.monitors import MonitorField, MonitorOperator, condition_holds
    from shared.services.monitors import condition_sql

    cases = list(itertools.product(MonitorField, MonitorOperator, (-1, 0, 1), (-1, 0, 1, 2),
                                   (0, 1, 2)))  # fmt: skip
    with db.transaction() as session:
        rows = session.execute(
            text(
                f"SELECT {condition_sql()} FROM unnest(CAST(:fields AS text[]), "
                "CAST(:ops AS text[]), CAST(:values AS bigint[])) WITH ORDINALITY "
                "AS m(field, operator, value_minor, n) JOIN unnest(CAST(:balances AS bigint[]), "
                "CAST(:held AS bigint[])) WITH ORDINALITY AS w(balance_minor, held_minor, n) "
                "USING (n) ORDER BY n"
            ),
            {"fields": [c[0].value for c in cases], "ops": [c[1].value for c in cases],
             "values": [c[2] for c in cases], "balances": [c[3] for c in cases],
             "held": [c[4] for c in cases]},
        ).scalars().all()  # fmt: skip
    assert rows == [condition_holds(*case) for case in cases]


def test_expiry_of_a_hold_clears_an_available_balance_monitor(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    import datetime as dt

    from shared.services.holds import expire_holds

    wallet = wallet_factory()
    applied(client, service_headers, deposit_body(wallet, "100.00"))
    low = create(client, service_headers, wallet, field="available_balance", value="50.00")
    hold = applied(client, service_headers, {"type": "hold", "amount": "60.00", "currency": "SGD",
                                             "source_wallet_id": str(wallet), "expires_in": 60})  # fmt: skip
    assert monitor(client, service_headers, low.get_json()["id"])["state"] == "triggered"
    with db.transaction() as session:
        expire_holds(session, now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    drain_stream()
    [*_, cleared] = monitor_events(client, service_headers, low.get_json()["id"])
    assert cleared["type"] == "balance_monitor.cleared"
    assert cleared["data"]["available_balance"] == "100.00"
    with db.transaction() as session:
        expiry = session.execute(
            text("SELECT id FROM transactions WHERE hold_id = :h AND type = 'expiry'"),
            {"h": hold},
        ).scalar_one()
    assert cleared["data"]["transaction_id"] == str(expiry)


def test_migration_0015_downgrades_and_upgrades_again(postgres_server: Any) -> None:
    """Downgrade drops the monitors and their events; the event types check keeps the others."""
    from alembic import command
    from sqlalchemy import create_engine

    from shared.migrations import alembic_config, upgrade_to_head

    url = postgres_server.create_database(f"tally_migrate_{uuid.uuid4().hex[:12]}")
    upgrade_to_head(url)
    engine = create_engine(url)
    check = (
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'event_type_known' AND conrelid = 'events'::regclass"
    )
    try:
        with engine.begin() as connection:
            assert "balance_monitor.cleared" in connection.execute(text(check)).scalar_one()
            connection.execute(
                text("INSERT INTO events (id, type, status) VALUES (:id, 'balance_monitor.cleared', "
                     "'clear'), (:other, 'transaction.completed', 'completed')"),
                {"id": uuid.uuid4(), "other": uuid.uuid4()},
            )  # fmt: skip
        command.downgrade(alembic_config(url), "0015-1")
        with engine.begin() as connection:
            constraint = connection.execute(text(check)).scalar_one()
            assert "balance_monitor" not in constraint and "transaction.completed" in constraint
            assert connection.execute(text("SELECT type FROM events")).scalars().all() == [
                "transaction.completed"
            ]
            assert (
                connection.execute(text("SELECT to_regclass('balance_monitors')")).scalar() is None
            )
        upgrade_to_head(url)
        with engine.begin() as connection:
            assert "balance_monitor.triggered" in connection.execute(text(check)).scalar_one()
    finally:
        engine.dispose()
