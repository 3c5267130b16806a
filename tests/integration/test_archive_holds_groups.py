"""Archive, as-of balances and reconciliation stay exact with holds and groups in the history.

The history is made by the real apply path (holds captured, voided and still
held; groups across wallets), then moved 100 days into the past by rewriting
its timestamps with triggers off (``session_replication_role = replica``),
as if it had happened then. Archiving at 90 days must change no read.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import text

from shared import db
from shared.services.archive import archive_before
from tests.helpers import assert_ledger_consistent, deposit_body, drain_stream
from tests.integration.test_archive import observe
from tests.integration.test_reconciliation import reconcile

DAYS_BACK = 100


def _post(client: Any, headers: dict[str, str], path: str, body: Any = None) -> str:
    response = client.post(
        path, json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def _age(wallets: list[uuid.UUID], transactions: list[str]) -> None:
    """Move the history of these wallets and transactions ``DAYS_BACK`` days back."""
    shift = {"days": dt.timedelta(days=DAYS_BACK), "wallets": wallets,
             "ids": [uuid.UUID(t) for t in transactions]}  # fmt: skip
    with db.transaction() as session:
        session.execute(text("SET LOCAL session_replication_role = replica"))
        session.execute(
            text("UPDATE ledger_entries SET created_at = created_at - :days "
                 "WHERE wallet_id = ANY(:wallets)"), shift,
        )  # fmt: skip
        session.execute(
            text("UPDATE hold_entries SET created_at = created_at - :days "
                 "WHERE wallet_id = ANY(:wallets)"), shift,
        )  # fmt: skip
        session.execute(
            text("UPDATE transactions SET created_at = created_at - :days, "
                 "updated_at = updated_at - :days, completed_at = completed_at - :days, "
                 "expires_at = expires_at - :days WHERE id = ANY(:ids)"), shift,
        )  # fmt: skip


def test_archive_changes_no_read_with_holds_and_groups_in_the_history(
    client: Any, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    drain_stream()
    a, b, c = wallet_factory(), wallet_factory(), wallet_factory()
    ids = [_post(client, service_headers, "/v1/transactions", deposit_body(w, "100.00"))
           for w in (a, b)]  # fmt: skip
    drain_stream()
    hold = {"type": "hold", "currency": "SGD", "source_wallet_id": str(a)}
    captured = _post(client, service_headers, "/v1/transactions", {**hold, "amount": "30.00"})
    voided = _post(client, service_headers, "/v1/transactions", {**hold, "amount": "10.00"})
    still_held = _post(client, service_headers, "/v1/transactions", {**hold, "amount": "5.00"})
    drain_stream()
    ids += [captured, voided, still_held]
    ids.append(_post(client, service_headers, f"/v1/transactions/{captured}/capture",
                     {"amount": "12.34", "destination_wallet_id": str(c)}))  # fmt: skip
    ids.append(_post(client, service_headers, f"/v1/transactions/{voided}/void"))
    legs = [{"source_wallet_id": str(src), "destination_wallet_id": str(c), "amount": "7.00",
             "currency": "SGD"} for src in (a, b)]  # fmt: skip
    ids.append(_post(client, service_headers, "/v1/transactions", {"type": "group", "legs": legs}))
    drain_stream()
    _age([a, b, c], ids)

    wallets = [a, b, c]
    now = dt.datetime.now(dt.UTC)
    probes = [now - dt.timedelta(days=d) for d in (DAYS_BACK + 1, DAYS_BACK - 1, 1)]
    before = observe(wallets, [uuid.UUID(t) for t in ids], probes)
    summary = archive_before(cutoff=now - dt.timedelta(days=90), chunk_size=3)
    assert summary.entries_archived > 0 and summary.transactions_archived > 0
    assert observe(wallets, [uuid.UUID(t) for t in ids], probes) == before
    assert reconcile().status == "ok"
    balances = {w: client.get(f"/v1/wallets/{w}", headers=service_headers).get_json()
                for w in wallets}  # fmt: skip
    assert (balances[a]["balance"], balances[a]["held_balance"]) == ("80.66", "5.00")
    assert (balances[b]["balance"], balances[c]["balance"]) == ("93.00", "26.34")
    assert_ledger_consistent()
