"""A request id sent to the API shows up in a real worker's JSON log line for its transaction."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import deposit_body, wait_terminal
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def json_worker() -> Iterator[CeleryProcess]:
    """Run a worker that logs JSON lines at INFO, as production does."""
    process = CeleryProcess(
        "worker",
        "reqid",
        concurrency=1,
        env={"TALLY_LOG_LEVEL": "INFO", "TALLY_LOG_FORMAT": "json"},
    ).start()
    yield process
    process.stop()


def settled_lines(log: str) -> list[dict[str, Any]]:
    """Return the worker's ``transactions_settled`` lines, parsed."""
    lines = []
    for text in log.splitlines():
        if '"transactions_settled"' in text:
            lines.append(json.loads(text[text.index("{") :]))
    return lines


def test_worker_logs_each_settled_transaction_with_its_request_id(
    json_worker: CeleryProcess,
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Callable[..., uuid.UUID],
) -> None:
    request_id = f"pipeline-{uuid.uuid4()}"
    headers = {**service_headers, "Idempotency-Key": str(uuid.uuid4()), "X-Request-Id": request_id}
    response = client.post("/v1/transactions", json=deposit_body(wallet_factory()), headers=headers)
    assert response.status_code == 202 and response.headers["X-Request-Id"] == request_id
    transaction_id = response.get_json()["id"]
    wait_terminal([transaction_id], timeout_seconds=60)
    deadline = time.monotonic() + 30
    while True:
        full_log = json_worker.log_path.read_text(errors="replace")
        found = [line for line in settled_lines(full_log) if transaction_id in line["transactions"]]
        if found:
            break
        assert time.monotonic() < deadline, (
            f"no settled line for {transaction_id}:\n{full_log[-3000:]}"
        )
        time.sleep(0.2)
    assert found[0]["transactions"][transaction_id] == request_id
    assert found[0]["level"] == "info" and found[0]["statuses"].get("completed", 0) >= 1
