"""Test servers and processes: embedded PostgreSQL and Redis, and real Celery workers and beats.

Nothing here is a stand-in: the tests talk to real servers over TCP and to
real ``celery`` processes, which they may SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

LOG_DIR = Path(tempfile.gettempdir()) / "tally-test-logs"


class CeleryProcess:
    """A real ``celery -A worker.app worker|beat`` process with its output in a log file.

    Args:
        kind: ``"worker"`` or ``"beat"``.
        name: a label for the log file and the worker's node name.
        concurrency: pool processes (worker only).
        env: extra environment variables for the process.
    """

    def __init__(
        self, kind: str, name: str, *, concurrency: int = 2, env: dict[str, str] | None = None
    ) -> None:
        self.kind, self.name, self.concurrency = kind, name, concurrency
        self.env = {**os.environ, **(env or {})}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{int(time.time() * 1000)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_seconds: float = 60) -> CeleryProcess:
        """Start the process and wait until it says it is ready.

        Raises:
            AssertionError: not ready within the timeout; the message carries the log.
        """
        args = [sys.executable, "-m", "celery", "-A", "worker.app", self.kind, "--loglevel", "INFO"]
        if self.kind == "worker":
            args += [
                "--concurrency", str(self.concurrency), "--pool", "prefork", "-Q", "tally",
                "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle",
                "--without-heartbeat",
            ]  # fmt: skip
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        marker = b"ready." if self.kind == "worker" else b"beat: Starting"
        deadline = time.monotonic() + ready_timeout_seconds
        while time.monotonic() < deadline:
            if marker in self.log_path.read_bytes():
                return self
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log()}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {ready_timeout_seconds}s:\n{self.log()}")

    def log(self) -> str:
        """Return the last 4000 characters the process printed."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def pool_pids(self) -> list[int]:
        """Return the pids of the worker's pool (child) processes."""
        assert self.process is not None
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once: a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: warm shutdown), killing after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
