"""A reconciliation started through the ops API is run by a real worker."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.pipeline


def test_ops_api_reconciliation_is_run_by_the_worker(
    client: Any, ops_headers: dict[str, str], worker: Any
) -> None:
    run_id = client.post("/v1/reconciliations", headers=ops_headers).get_json()["id"]
    deadline = time.monotonic() + 60
    while True:
        run = client.get(f"/v1/reconciliations/{run_id}", headers=ops_headers).get_json()
        if run["status"] != "running":
            break
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    assert run["status"] == "ok", run
    assert run["mismatches"] == [] and run["wallets_checked"] > 0
    assert set(run["currency_totals"].values()) <= {"0.00", "0"}
