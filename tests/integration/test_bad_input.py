"""Bad input gets a 4xx problem+json with a machine code, never a 500 (property-based)."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["type", "amount", "currency", "source_wallet_id", "destination_wallet_id",
          "description", "metadata", "owner_ref", "status"]  # fmt: skip
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=7)
field_values = st.sampled_from(
    ["deposit", "withdrawal", "transfer", "hold", "group", "SGD", "JPY", "10.00", "0", "-1",
     "1e3", str(uuid.uuid4()), "", "frozen"]
)  # fmt: skip
plausible = st.dictionaries(st.sampled_from(FIELDS), field_values | json_values, max_size=6)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_problem(response: Any) -> None:
    assert 400 <= response.status_code < 500 or response.status_code in (200, 201, 202), (
        response.status_code,
        response.get_data(as_text=True)[:300],
    )
    if response.status_code >= 400:
        assert response.content_type == "application/problem+json"
        body = response.get_json()
        assert body["status"] == response.status_code and body["code"]


@SETTINGS
@given(body=bodies | plausible)
def test_submitting_any_json_never_fails_with_5xx(
    client: Any, service_headers: dict[str, str], body: Any
) -> None:
    headers = {**service_headers, "Idempotency-Key": str(uuid.uuid4())}
    assert_problem(client.post("/v1/transactions", json=body, headers=headers))


@SETTINGS
@given(body=bodies | plausible | json_values)
def test_creating_wallets_from_any_json_never_fails_with_5xx(
    client: Any, service_headers: dict[str, str], body: Any
) -> None:
    assert_problem(client.post("/v1/wallets", json=body, headers=service_headers))


@SETTINGS
@given(
    raw=st.binary(max_size=64),
    key=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300),
)
def test_raw_bytes_and_odd_keys_never_fail_with_5xx(
    client: Any, service_headers: dict[str, str], raw: bytes, key: str
) -> None:
    headers = {**service_headers, "Idempotency-Key": key, "Content-Type": "application/json"}
    assert_problem(client.post("/v1/transactions", data=raw, headers=headers))


@SETTINGS
@given(
    path=st.sampled_from(["/v1/wallets", "/v1/transactions", "/v1/reconciliations"]),
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "status", "type", "wallet_id", "owner_ref", "wait"]),
        st.text(max_size=30),
        max_size=4,
    ),
)
def test_any_query_string_never_fails_with_5xx(
    client: Any, ops_headers: dict[str, str], path: str, params: dict[str, str]
) -> None:
    assert_problem(client.get(path, query_string=params, headers=ops_headers))
