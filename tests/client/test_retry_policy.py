"""The retry rules of the client's core, answer by answer (no I/O: built httpx answers).

docs/client.md, "Retries": connection failures, 429 and 503 are retried with
backoff and jitter, at least as long as the server asks; no other status is;
a call that is not idempotent is sent again only where the API cannot have acted.
"""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from tally_client import _calls
from tally_client._core import RetryPolicy, format_amount, server_delay_seconds

POLICY = RetryPolicy(max_retries=3, backoff_base_seconds=0.5, backoff_max_seconds=8)
KEYED = _calls.submit({"type": "deposit"}, None)
NOT_IDEMPOTENT = _calls.create_wallet("alice", "SGD")


def _answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422, 500])
def test_other_statuses_are_never_retried(status: int) -> None:
    assert POLICY.delay_seconds(KEYED, 0, response=_answer(status)) is None


@pytest.mark.parametrize("call", [KEYED, NOT_IDEMPOTENT])
def test_429_waits_at_least_retry_after_and_503_backs_off(call: _calls.Call[object]) -> None:
    delay = POLICY.delay_seconds(call, 0, response=_answer(429, **{"Retry-After": "3"}))
    assert delay is not None and 3 <= delay <= POLICY.retry_after_max_seconds
    reset = POLICY.delay_seconds(call, 0, response=_answer(429, **{"RateLimit-Reset": "2"}))
    assert reset is not None and reset >= 2
    backoff = POLICY.delay_seconds(call, 2, response=_answer(503))
    assert backoff is not None and 0 <= backoff <= 2.0
    assert POLICY.delay_seconds(call, 3, response=_answer(503)) is None  # retries used up


def test_a_lost_answer_is_retried_only_for_an_idempotent_call() -> None:
    request = httpx.Request("POST", "http://api/v1/transactions")
    lost = httpx.ReadError("reset", request=request)
    refused = httpx.ConnectError("refused", request=request)
    assert POLICY.delay_seconds(KEYED, 0, error=lost) is not None
    assert POLICY.delay_seconds(NOT_IDEMPOTENT, 0, error=lost) is None
    assert POLICY.delay_seconds(NOT_IDEMPOTENT, 0, error=refused) is not None


def test_a_call_keeps_its_key_and_a_batch_its_items_keys() -> None:
    assert KEYED.headers["Idempotency-Key"] == KEYED.headers["Idempotency-Key"]
    assert _calls.submit({}, None).headers != _calls.submit({}, None).headers
    assert _calls.submit({}, "mine").headers == {"Idempotency-Key": "mine"}
    batch = _calls.submit_batch([{"type": "deposit"}, {"type": "deposit", "idempotency_key": "k"}])
    keys = [item["idempotency_key"] for item in batch.body["transactions"]]
    assert keys[1] == "k" and len(set(keys)) == 2


def test_server_delay_reads_seconds_and_http_dates() -> None:
    assert server_delay_seconds(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert server_delay_seconds(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0  # fmt: skip
    assert server_delay_seconds(httpx.Headers({})) is None


def test_amounts_are_decimal_strings_and_never_floats() -> None:
    assert [format_amount(a) for a in (Decimal("10.50"), Decimal("1E+2"), "0.10", 1200)] == [
        "10.50",
        "100",
        "0.10",
        "1200",
    ]
    with pytest.raises(TypeError):
        format_amount(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        format_amount(Decimal("NaN"))
