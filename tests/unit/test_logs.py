"""Log lines: JSON or console per TALLY_LOG_FORMAT, with the request id bound per request."""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import structlog

from api.observe import _REQUEST_ID_RE
from shared.logs import BufferedLines, configure_logging


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


class _Stream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


#: Long enough that no timed write happens during a test that does not wait for one.
_NEVER = 3600.0


def test_buffered_lines_keep_each_threads_order_and_share_writes() -> None:
    stream = _Stream()
    lines = BufferedLines(stream, _NEVER)

    def log(thread: int) -> None:
        for index in range(200):
            lines.write(f"{thread}:{index}")

    threads = [threading.Thread(target=log, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stream.getvalue() == ""
    lines.flush()
    written = stream.getvalue().splitlines()
    assert sorted(written) == sorted(f"{t}:{i}" for t in range(8) for i in range(200))
    for thread in range(8):
        own = [int(line.split(":")[1]) for line in written if line.startswith(f"{thread}:")]
        assert own == list(range(200))
    assert stream.writes == 1


def test_a_warning_is_written_at_once_after_every_line_before_it() -> None:
    stream = _Stream()
    lines = BufferedLines(stream, _NEVER)
    lines.write("first")
    lines.write("second")
    lines.write("problem", at_once=True)
    assert stream.getvalue() == "first\nsecond\nproblem\n"
    assert stream.writes == 1


def test_a_line_is_logged_while_a_write_is_blocked() -> None:
    """A stream that blocks (a full pipe) holds back the write, not a thread that logs meanwhile."""

    class _Blocking(_Stream):
        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = threading.Event(), threading.Event()

        def write(self, text: str) -> int:
            self.entered.set()
            self.release.wait()
            return super().write(text)

    stream = _Blocking()
    lines = BufferedLines(stream, _NEVER)
    lines.write("first")
    writer = threading.Thread(target=lines.flush)
    writer.start()
    assert stream.entered.wait(30)  # the writer is inside the stream's write
    logged = threading.Event()
    logger = threading.Thread(target=lambda: (lines.write("second"), logged.set()))
    logger.start()
    # A bound on a stuck logger, not a timing claim: it returns at once unless it waits for the write.
    assert logged.wait(30), "a thread that logs waited for the blocked write"
    stream.release.set()
    writer.join()
    logger.join()
    lines.flush()
    assert stream.getvalue() == "first\nsecond\n"


def test_a_full_buffer_is_written_without_waiting() -> None:
    stream = _Stream()
    lines = BufferedLines(stream, _NEVER, bytes_max=100)
    for index in range(30):
        lines.write(f"line {index:04d}")  # 10 characters and a newline each
    assert stream.writes == 3 and len(stream.getvalue().splitlines()) == 30


def test_an_info_line_is_written_without_another_call() -> None:
    stream = _Stream()
    lines = BufferedLines(stream, 0.01)
    lines.write("alone")
    deadline = time.monotonic() + 30  # a bound on a stuck writer, not a timing claim
    while stream.getvalue() != "alone\n":
        assert time.monotonic() < deadline, "the buffered line was never written"
        time.sleep(0.01)


def test_a_forked_child_writes_none_of_its_parents_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        lines = BufferedLines(stream, _NEVER)
        lines.write("parent")
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                lines.write("child", at_once=True)
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        lines.flush()
    assert sorted(path.read_text().splitlines()) == ["child", "parent"]


def test_no_buffer_without_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="flush_seconds"):
        BufferedLines(io.StringIO(), 0)


def test_configured_with_an_interval_structlog_lines_go_through_the_buffer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", flush_seconds=_NEVER)
    log = structlog.get_logger("t")
    log.info("request", status=202)
    assert "request" not in capsys.readouterr().err
    log.warning("drain_retry", retry=1)
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["request", "drain_retry"]
