"""examples/walkthrough_client.py runs the README's walkthrough with the client, end to end,
against the real API process and a real Celery worker, and prints what docs/client.md shows."""

from __future__ import annotations

from typing import Any

import pytest

from examples.walkthrough_client import run
from tests.client.conftest import secret_of

pytestmark = pytest.mark.pipeline

EXPECTED = """\
replayed the same transaction: True
deposit 100.00 completed None
transfer 30.00 completed None
withdrawal 80.00 failed insufficient_funds
alice 70.00, bob 30.00
2 transfer debit 30.00 70.00
1 deposit credit 100.00 100.00
hold 20.00 held None
balance 30.00 available 10.00 held 20.00
capture 12.50 completed None
hold_not_open
group 2 legs completed None
7.50 22.00 0.50
reversal 2.50 completed None
reversed 2.50
202 deposit
202 withdrawal
422 validation_failed
withdrawal 40.00 completed None
carol available -10.00
overdraft_in_use
found True
transaction.completed deposit None
transaction.failed withdrawal insufficient_funds
403 forbidden
pending
withdrawal 80.00 completed None
alice 10.00"""


def test_the_client_walkthrough_prints_what_the_docs_show(
    worker: Any, api_url: str, service_headers: dict[str, str], ops_headers: dict[str, str]
) -> None:
    lines: list[str] = []
    run(api_url, secret_of(service_headers), secret_of(ops_headers), out=lines.append)
    assert "\n".join(lines) == EXPECTED
