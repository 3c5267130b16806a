"""Log lines: JSON or console per TALLY_LOG_FORMAT, with the request id bound per request."""

from __future__ import annotations

import json
import re

import pytest
import structlog

from api.observe import _REQUEST_ID_RE
from shared.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    structlog.reset_defaults()


def test_json_format_renders_one_object_per_line_with_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        structlog.get_logger("t").info("transactions_settled", transactions={"id-1": "req-1"})
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "transactions_settled"
    assert line["request_id"] == "req-1" and line["transactions"] == {"id-1": "req-1"}
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


def test_console_format_renders_key_value_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console")
    structlog.get_logger("t").info("drain_retry", retry=3)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "drain_retry" in line and re.search(r"retry=.*3", line)
    with pytest.raises(ValueError):
        json.loads(line)


def test_filtered_levels_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json")
    structlog.get_logger("t").info("quiet")
    assert "quiet" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("", False), ("a b", False),
     ("a\x00b", False), ("é", False)],
)  # fmt: skip
def test_request_id_header_values(value: str, accepted: bool) -> None:
    assert bool(_REQUEST_ID_RE.fullmatch(value)) is accepted


def test_log_format_setting_is_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.config import Settings

    monkeypatch.setenv("TALLY_LOG_FORMAT", "console")
    assert Settings().log_format == "console"
    monkeypatch.setenv("TALLY_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
