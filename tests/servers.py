"""Test servers and processes: embedded PostgreSQL and Redis, and real Celery workers and beats.

Nothing here is a stand-in: the tests talk to real servers over TCP and to
real ``celery`` processes, which they may SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

LOG_DIR = Path(tempfile.gettempdir()) / "tally-test-logs"


class CeleryProcess:
    """A real ``celery -A worker.app worker|beat`` process with its output in a log file.

    Args:
        kind: ``"worker"`` or ``"beat"``.
        name: a label for the log file and the worker's node name.
        concurrency: pool processes, or threads (worker only).
        env: extra environment variables for the process.
        queues: the queues a worker consumes; by default both, as one process
            serves the tests (``tally serve worker`` and ``tally serve webhooks``
            split them in production).
        pool: a worker's Celery pool, ``prefork`` or ``threads``.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        queues: str = "tally,tally.webhooks",
        pool: str = "prefork",
    ) -> None:
        self.kind, self.name, self.concurrency = kind, name, concurrency
        self.queues, self.pool = queues, pool
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
                "--concurrency", str(self.concurrency), "--pool", self.pool, "-Q", self.queues,
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


def crash_postgres(server: Any) -> int:
    """SIGKILL a running PostgreSQL's postmaster and every process of it at once; return its pid.

    A crash, not a shutdown: no checkpoint, no backend finishes its
    statement, so the next start recovers from the WAL (PostgreSQL docs,
    "Reliability and the Write-Ahead Log"). ``server`` is a
    ``cli.devservers.EmbeddedPostgres``.
    """
    pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    processes = [postmaster, *postmaster.children(recursive=True)]
    for process in processes:  # the postmaster first, so it restarts none of the others
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"PostgreSQL processes survived SIGKILL: {alive}"
    return pid


TALLY = str(Path(sys.executable).parent / "tally")
PY_SPY = str(Path(sys.executable).parent / "py-spy")


class TallyUp:
    """A real ``tally up`` in ``workdir`` on ``port``, its output in a log file there.

    Args:
        workdir: its working directory; its data directory is ``workdir/.tally``.
        port: the API's port.
        env: extra environment variables. Without ``DATABASE_URL`` / ``REDIS_URL``
            in them it starts embedded servers; with them it uses those.
    """

    def __init__(self, workdir: Path, port: int, *, env: dict[str, str] | None = None) -> None:
        self.workdir, self.port = workdir, port
        self.data_dir = workdir / ".tally"
        self.url = f"http://127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(
            TALLY_PORT=str(port), TALLY_DATA_DIR=str(self.data_dir), TALLY_WORKER_CONCURRENCY="1",
            TALLY_WEB_WORKERS="1", TALLY_LOG_LEVEL="INFO",
        )  # fmt: skip
        self.env.update(env or {})
        self.log_path = workdir / f"up-{time.time_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_seconds: float = 180) -> TallyUp:
        """Start it and wait until it prints "Tally is up at"; return self.

        Raises:
            AssertionError: it exited or was not up in time; the message carries its output.
        """
        self.process = subprocess.Popen(
            [TALLY, "up"], cwd=self.workdir, env=self.env, stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + ready_timeout_seconds
        while "Tally is up at" not in self.output():
            assert self.process.poll() is None, f"tally up exited:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"tally up not up:\n{self.output()[-4000:]}"
            time.sleep(0.2)
        return self

    def output(self) -> str:
        """Return everything it printed so far: its own lines and supervisord's."""
        return self.log_path.read_text(errors="replace")

    def program_output(self, program: str) -> str:
        """Return what supervised ``program`` wrote so far (its log file; "" before it ran)."""
        path = self.data_dir / "logs" / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def supervised_pid(self, program: str) -> int | None:
        """Return the pid supervisord reports for ``program`` while it runs, else None.

        Asks supervisord over the XML-RPC socket named in the generated
        ``supervisord.conf`` (the interface ``supervisorctl`` uses).
        """
        from supervisor.xmlrpc import SupervisorTransport

        config = (self.data_dir / "supervisord.conf").read_text()
        socket = re.search(r"^serverurl=unix://(.+)$", config, re.MULTILINE)
        assert socket is not None, config
        transport = SupervisorTransport(None, None, f"unix://{socket.group(1)}")
        proxy: Any = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            info = proxy.supervisor.getProcessInfo(program)
        except OSError:
            return None
        return int(info["pid"]) if info["statename"] in ("STARTING", "RUNNING") else None

    def wait_running(
        self, program: str, *, other_than: int | None = None, timeout_seconds: float = 60
    ) -> int:
        """Wait until supervisord runs ``program`` (under a pid other than ``other_than``); return the pid.

        Raises:
            AssertionError: not within ``timeout_seconds``; the message carries the output.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            pid = self.supervised_pid(program)
            if pid is not None and pid != other_than:
                return pid
            assert time.monotonic() < deadline, (
                f"{program} not running in {timeout_seconds}s:\n{self.output()[-4000:]}"
            )
            time.sleep(0.05)

    def python_stacks(self, program: str) -> str:
        """Return ``py-spy dump`` of ``program``'s process and its children, for a failure's message.

        Shows where each process of a stuck program waits (a pool process
        holding the stream lock, say); an error in place of a dump if py-spy
        cannot read a process.
        """
        pid = self.supervised_pid(program)
        if pid is None:
            return f"{program}: not running"
        dumps = []
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                result = subprocess.run(
                    [PY_SPY, "dump", "--pid", str(process.pid)],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                dumps.append(f"{program} {process.pid}:\n{result.stdout}{result.stderr}")
        return "\n".join(dumps)

    def leftovers(self) -> list[str]:
        """Return the command lines of processes that belong to this stack.

        A process belongs to it when its command line names the data directory
        (supervisord, PostgreSQL), it runs inside it (Redis, which rewrites its
        command line and environment for its process title), or its environment
        carries it (the API server, celery and any child of theirs).
        """
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid == os.getpid():
                    continue
                cmdline = " ".join(proc.info["cmdline"] or [])
                if (
                    str(self.data_dir) in cmdline
                    or proc.cwd().startswith(str(self.data_dir))
                    or proc.environ().get("TALLY_DATA_DIR") == str(self.data_dir)
                ):
                    found.append(f"{proc.pid} {cmdline}")
        return found

    def stop(self, *, timeout_seconds: float = 120) -> None:
        """Send SIGTERM and wait; assert that no process of the stack is left behind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"tally up still running:\n{self.output()[-4000:]}") from None
        deadline = time.monotonic() + 20
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.leftovers() == [], f"left behind:\n{self.leftovers()}"


@contextlib.contextmanager
def serve_web(
    log_dir: Path, *, workers: int = 1, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run the API as production does (``tally serve web``) on ``port`` (default: a free one).

    Yields ``(url, process)`` once ``/healthz`` answers; stops the server after.

    Raises:
        AssertionError: it exited, or did not answer within 60 s (the message carries its log).
    """
    from cli.devservers import free_port

    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"web-{time.time_ns()}.log"
    env = {**os.environ, "TALLY_PORT": str(port), "TALLY_WEB_WORKERS": str(workers)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "tally"), "serve", "web"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert process.poll() is None, f"the server exited:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"no answer in 60 s:\n{log.read_text()[-4000:]}"
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
