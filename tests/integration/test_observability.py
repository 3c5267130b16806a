"""What operators see: /metrics as Prometheus parses it, request ids from HTTP to the worker's
log lines, the sweep's gauges, the ops overview and the dashboard page."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from shared import db
from tests.helpers import deposit_body, drain_stream, stuck_lock_holder, submit


def scrape(client: Any) -> dict[str, list[Any]]:
    """GET /metrics and parse it with prometheus-client's parser: ``{family: [samples]}``."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(response.get_data(as_text=True))
    }


def value(families: dict[str, list[Any]], sample_name: str, **labels: str) -> float:
    """Return the sample ``sample_name`` whose labels include ``labels`` (0.0 when absent)."""
    for samples in families.values():
        for sample in samples:
            if sample.name == sample_name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def withdrawal_body(wallet_id: Any, amount: str) -> dict[str, Any]:
    return {"type": "withdrawal", "amount": amount, "currency": "SGD",
            "source_wallet_id": str(wallet_id)}  # fmt: skip


def test_metrics_parse_and_count_requests_submissions_and_settlements(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    wallet = wallet_factory()
    before = scrape(client)
    assert submit(client, service_headers, deposit_body(wallet, "10.00")).status_code == 202
    assert submit(client, service_headers, withdrawal_body(wallet, "99.00")).status_code == 202
    drain_stream()
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tally_transactions_submitted_total", type="deposit") == 1
    assert grew("tally_transactions_submitted_total", type="withdrawal") == 1
    completed = {"type": "deposit", "status": "completed", "failure_code": "none"}
    failed = {"type": "withdrawal", "status": "failed", "failure_code": "insufficient_funds"}
    # At least: the drain also settles whatever else was pending.
    assert grew("tally_transactions_settled_total", **completed) >= 1
    assert grew("tally_transactions_settled_total", **failed) >= 1
    assert grew("tally_transaction_settle_duration_seconds_count") >= 2
    assert grew("tally_apply_batch_transactions_count") >= 1
    assert grew("tally_apply_batch_duration_seconds_count") >= 1
    # Route templates, never ids, label the request histogram.
    route = {"method": "POST", "route": "/v1/transactions", "status": "202"}
    assert grew("tally_http_request_duration_seconds_count", **route) == 2
    routes = {s.labels.get("route") for s in after["tally_http_request_duration_seconds"]}
    assert not any(str(wallet) in (r or "") for r in routes)


def test_unmatched_paths_share_one_route_label(client: Any) -> None:
    client.get(f"/no/such/{uuid.uuid4()}")
    samples = scrape(client)["tally_http_request_duration_seconds"]
    unmatched = [s for s in samples if s.labels.get("route") == "unmatched"]
    assert unmatched and not [s for s in samples if "/no/such" in s.labels.get("route", "")]


def test_request_id_is_echoed_or_generated(client: Any, service_headers: dict[str, str]) -> None:
    sent = client.get("/healthz", headers={"X-Request-Id": "trace-abc-123"})
    assert sent.headers["X-Request-Id"] == "trace-abc-123"
    made = client.get("/healthz")
    assert uuid.UUID(made.headers["X-Request-Id"])
    # An unusable value is replaced, never echoed; a refused request has an id too.
    bad = client.get("/v1/wallets", headers={"X-Request-Id": "x" * 200})
    assert bad.status_code == 401 and uuid.UUID(bad.headers["X-Request-Id"])


class Recorder:
    """A stand-in for a structlog logger that keeps every line: ``{"event", "level", **fields}``."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def is_enabled_for(self, level: int) -> bool:
        return True

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **fields: self.lines.append({"event": event, "level": level, **fields})


def test_request_id_flows_into_the_row_and_the_workers_log_line(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Callable[..., uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.services import processor

    wallet = wallet_factory()
    request_id = f"req-{uuid.uuid4()}"
    response = client.post(
        "/v1/transactions",
        json=deposit_body(wallet, "3.00"),
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4()),
                 "X-Request-Id": request_id},
    )  # fmt: skip
    assert response.status_code == 202 and response.headers["X-Request-Id"] == request_id
    transaction_id = response.get_json()["id"]
    with db.transaction() as session:
        stored = session.execute(
            text("SELECT request_id FROM transactions WHERE id = :id"), {"id": transaction_id}
        ).scalar_one()
    assert stored == request_id
    # The session logs at WARNING; record what the apply path logs at INFO.
    recorder = Recorder()
    monkeypatch.setattr(processor, "_log", recorder)
    drain_stream()
    settled = [line for line in recorder.lines if line["event"] == "transactions_settled"]
    assert any(line["transactions"].get(transaction_id) == request_id for line in settled), settled


def test_sweep_refreshes_the_pending_gauges(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    from worker.tasks import sweep_stalled_transactions

    wallet = wallet_factory()
    assert submit(client, service_headers, deposit_body(wallet, "1.00")).status_code == 202
    sweep_stalled_transactions()
    families = scrape(client)
    assert value(families, "tally_pending_transactions") >= 1
    assert value(families, "tally_pending_oldest_age_seconds") >= 0
    assert value(families, "tally_dependency_up", dependency="postgresql") == 1
    drain_stream()


def test_sweep_frees_a_stuck_stream_lock_with_an_error_line_and_a_count(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.config import get_settings
    from shared.services.processor import STREAM_LOCK_KEY
    from worker import tasks

    monkeypatch.setenv("TALLY_STREAM_LOCK_IDLE_SECONDS", "0.2")
    get_settings.cache_clear()
    recorder = Recorder()
    monkeypatch.setattr(tasks, "_log", recorder)
    before = value(scrape(client), "tally_stream_locks_released_total")
    try:
        with stuck_lock_holder(STREAM_LOCK_KEY):
            time.sleep(0.5)
            tasks.sweep_stalled_transactions()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    freed = [line for line in recorder.lines if line["event"] == "stream_lock_released"]
    assert [line["level"] for line in freed] == ["error"]
    assert freed[0]["idle_seconds"] >= 0.2
    assert value(scrape(client), "tally_stream_locks_released_total") == before + 1


def test_readyz_sets_the_dependency_gauges(client: Any) -> None:
    assert client.get("/readyz").status_code == 200
    families = scrape(client)
    assert value(families, "tally_dependency_up", dependency="postgresql") == 1
    assert value(families, "tally_dependency_up", dependency="redis") == 1


def test_ops_overview_shows_backlog_and_throughput(
    client: Any,
    service_headers: dict[str, str],
    ops_headers: dict[str, str],
    wallet_factory: Callable[..., uuid.UUID],
) -> None:
    assert client.get("/v1/ops/overview", headers=service_headers).status_code == 403
    wallet = wallet_factory()
    assert submit(client, service_headers, deposit_body(wallet, "1.00")).status_code == 202
    pending = client.get("/v1/ops/overview", headers=ops_headers).get_json()["pending"]
    assert pending["count"] >= 1 and pending["oldest_age_seconds"] >= 0
    drain_stream()
    body = client.get("/v1/ops/overview", headers=ops_headers).get_json()
    minutes = body["throughput"]
    # The current minute, or the one before if a minute began since the drain.
    assert len(minutes) == 10 and sum(m["completed"] for m in minutes[-2:]) >= 1
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)


def test_dashboard_page_ships_its_assets_and_a_strict_policy(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "http" not in html.replace("http-equiv", "")
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert asset in html
        assert client.get(asset).status_code == 200


@pytest.mark.parametrize("level", ["json", "console"])
def test_log_format_switch_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    from shared.config import Settings

    monkeypatch.setenv("TALLY_LOG_FORMAT", level)
    assert Settings().log_format == level
