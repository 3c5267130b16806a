"""Owner references and secrets never reach a log in clear."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from shared.redaction import MASK, MaskingFilter, mask_sensitive, mask_text

SECRET = "tally_service_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcd"


@pytest.mark.parametrize(
    ("key", "value"),
    [("owner_ref", "+6591234567"), ("authorization", f"Bearer {SECRET}"), ("secret", SECRET),
     ("api_key", SECRET), ("webhook_secret", "whsec_abc"), ("Authorization", "Basic abc")],
)  # fmt: skip
def test_sensitive_keys_are_masked(key: str, value: str) -> None:
    event = mask_sensitive(None, "info", {"event": "x", key: value})
    assert event[key] == MASK


def test_nested_values_and_ids_are_handled() -> None:
    event = mask_sensitive(
        None,
        "info",
        {"event": "wallet", "api_key_id": "k-1", "body": {"owner_ref": "+65", "items": [{"secret": "s"}]}},
    )  # fmt: skip
    assert event["api_key_id"] == "k-1"
    assert event["body"] == {"owner_ref": MASK, "items": [{"secret": MASK}]}


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [("GET /v1/wallets?owner_ref=%2B6591234567&limit=5", "limit=5", "6591234567"),
     (f"Authorization: Bearer {SECRET}", "Bearer", SECRET),
     (f"key {SECRET} created", "created", SECRET)],
)  # fmt: skip
def test_strings_are_scrubbed(text: str, kept: str, gone: str) -> None:
    masked = mask_text(text)
    assert kept in masked and gone not in masked and MASK in masked


def test_a_structlog_line_is_masked_end_to_end() -> None:
    out = io.StringIO()
    before = structlog.get_config()
    structlog.configure(
        processors=[mask_sensitive, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    try:
        structlog.get_logger().info("created", owner_ref="+6591234567", detail=f"k={SECRET}")
    finally:
        structlog.configure(**before)
    line = json.loads(out.getvalue())
    assert "6591234567" not in out.getvalue() and SECRET not in out.getvalue()
    assert line["owner_ref"] == MASK


def test_access_log_records_are_masked() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/v1/wallets?owner_ref=alice", "1.1", 200), None,
    )  # fmt: skip
    assert MaskingFilter().filter(record)
    assert "alice" not in record.getMessage() and MASK in record.getMessage()
