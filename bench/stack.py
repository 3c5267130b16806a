"""The stack a benchmark measures: one given by URL and keys, or one started with ``tally up``.

The benchmark meets the product only the way users do: its HTTP API, its
database (read after a run, for timestamps), and the ``tally up`` command,
used as a black box: start it, wait for its "Tally is up at" line, read the
keys and URLs it wrote to its data directory, stop it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

import broker

READY_LINE = "Tally is up at"


@dataclass(frozen=True)
class Stack:
    """Describe a running Tally: its base URL, its two API keys and its PostgreSQL URL.

    ``ops_key`` may be empty: no workload calls an ops-only endpoint today.
    ``description`` says, for the report, which stack this is and how it is sized.
    ``root`` is the directory of a stack this benchmark started (its processes
    can then be found and their CPU time read, :func:`cpu_seconds_by_component`);
    None for a stack given by URL.
    """

    url: str
    service_key: str
    ops_key: str
    database_url: str
    description: str = ""
    root: Path | None = None


#: The components CPU time is reported for, in the report's order.
COMPONENTS = ("api", "worker", "webhooks", "postgres", "redis", "other")


def _component(cmdline: list[str]) -> str:
    """Name the component a stack process belongs to, from its command line."""
    text = " ".join(cmdline)
    program = os.path.basename(cmdline[0]) if cmdline else ""
    if program == "postgres" or text.startswith("postgres:"):
        return "postgres"
    if "redis-server" in text or "valkey-server" in text:
        return "redis"
    if "uvicorn" in text:  # `tally serve web` execs it
        return "api"
    if "celery" in text and "worker" in cmdline:  # the subcommand, not ``-A worker.app``
        queues = cmdline[cmdline.index("-Q") + 1].split(",") if "-Q" in cmdline else []
        return "webhooks" if queues == [broker.WEBHOOKS_QUEUE] else "worker"
    return "other"


def cpu_seconds(process: psutil.Process) -> float:
    """Return ``process``'s CPU seconds so far, user + system, with its children that ended.

    A child counts once it has exited and been waited for (``psutil``'s
    ``children_user``/``children_system``): a PostgreSQL backend that ended
    counts in its postmaster.

    Raises:
        psutil.Error: the process is gone or not readable.
    """
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def cpu_seconds_by_component(root: Path) -> dict[str, float]:
    """Return the CPU seconds (user + system) the stack under ``root`` has used so far, by component.

    Every live process of the stack counts, with its children that ended
    (:func:`cpu_seconds`). Take it before and after a phase; the difference is
    the phase's.

    Returns:
        seconds per name of :data:`COMPONENTS`: ``api`` (uvicorn), ``worker``
        (Celery on the apply queue), ``webhooks`` (Celery on the webhook queue
        alone), ``postgres``, ``redis``, ``other`` (supervisord, beat, ``tally up``).
    """
    totals = dict.fromkeys(COMPONENTS, 0.0)
    processes = {process.pid: process for process in _stack_processes(root)}
    # PostgreSQL's backends and the embedded Redis name neither the directory nor
    # carry the environment: they are found as descendants of what does.
    for process in list(processes.values()):
        with contextlib.suppress(psutil.Error):
            processes |= {child.pid: child for child in process.children(recursive=True)}
    names: dict[int, str] = {}
    for process in processes.values():
        with contextlib.suppress(psutil.Error):
            names[process.pid] = _component(process.cmdline())
    for process in processes.values():
        try:
            seconds = cpu_seconds(process)
            name = names.get(process.pid, "other")
            # uvicorn's workers are spawned interpreters whose command line names
            # nothing: they belong to the component of the parent that started them.
            if name == "other" and (parent := process.parent()) is not None:
                name = names.get(parent.pid, "other")
        except psutil.Error:
            continue
        totals[name] += seconds
    return totals


def stack_processes_of(root: Path, component: str) -> list[psutil.Process]:
    """Return the live processes of the stack under ``root`` that belong to ``component``.

    Args:
        component: a name of :data:`COMPONENTS` (``"worker"``: the apply
            worker's main process and its pool).
    """
    found = []
    for process in _stack_processes(root):
        with contextlib.suppress(psutil.Error):
            if _component(process.cmdline()) == component:
                found.append(process)
                found.extend(process.children(recursive=True))
    return found


def _free_port() -> int:
    # The kernel picks a free port; another process may take it before `tally up`
    # binds it, a race a benchmark can live with (the start then fails loudly).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_runtime_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip():
            values[name.strip()] = value.strip()
    return values


def _wait_ready(url: str, timeout_seconds: float) -> None:
    # `tally up` announces itself even when /readyz never answered, so check it here.
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url}/readyz did not answer 200 within {timeout_seconds:.0f} s")


def _stack_processes(root: Path) -> list[psutil.Process]:
    """Return live processes of the stack under ``root``.

    Some are not descendants of ``tally up`` (``pg_ctl`` daemonises PostgreSQL),
    so a process belongs to the stack when its command line names ``root`` or its
    environment carries ``TALLY_DATA_DIR`` inside ``root``: every process the
    stack starts inherits that environment.
    """
    found = []
    marker = str(root)
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid == os.getpid():
                continue
            cmdline = " ".join(process.info["cmdline"] or [])
            if marker in cmdline or marker in process.environ().get("TALLY_DATA_DIR", ""):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _stop(process: subprocess.Popen[bytes], root: Path, log: Path) -> None:
    """Stop ``tally up`` with SIGTERM and check that nothing of its stack is left.

    Raises:
        RuntimeError: a process of the stack outlived the stop; it is then killed
            (by pid) so the machine is clean, and the error names it.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    deadline = time.monotonic() + 30
    while (left := _stack_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        names = [" ".join(p.cmdline())[:120] for p in left if p.is_running()]
        for leftover in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        raise RuntimeError(
            f"`tally up` left processes after SIGTERM (killed now): {names}; log {log}"
        )


@contextlib.contextmanager
def started_stack(
    *,
    web_workers: int | None,
    web_threads: int | None,
    worker_concurrency: int | None,
    startup_timeout_seconds: float = 180.0,
) -> Iterator[Stack]:
    """Run ``tally up`` in a temporary directory and yield the stack it serves.

    The stack gets its own ``TALLY_DATA_DIR`` (so embedded PostgreSQL and Redis,
    durable as in production) and a free ``TALLY_PORT``; ``None`` sizes keep the
    stack's defaults. On exit it is stopped with SIGTERM and the directory removed
    (kept, with ``up.log``, when the stop was not clean).

    Raises:
        RuntimeError: ``tally up`` exited or did not become ready within
            ``startup_timeout_seconds`` (the message carries its log's tail), or
            left processes running after it stopped.
    """
    root = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    data_dir, log = root / ".tally", root / "up.log"
    port = _free_port()
    # DATABASE_URL / REDIS_URL would make `tally up` use those servers, not its own.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TALLY_DATA_DIR=str(data_dir), TALLY_PORT=str(port), TALLY_HOST="127.0.0.1")
    sizes = []
    for name, value in (
        ("TALLY_WEB_WORKERS", web_workers),
        ("TALLY_WEB_THREADS", web_threads),
        ("TALLY_WORKER_CONCURRENCY", worker_concurrency),
    ):
        if value is not None:
            env[name] = str(value)
        sizes.append(f"{name}={value if value is not None else 'default'}")
    sizes_text = ", ".join(sizes)
    tally = str(Path(sys.executable).parent / "tally")
    # A session of its own: Ctrl-C on the benchmark reaches only the benchmark,
    # which then stops the stack with SIGTERM like every other exit path.
    process = subprocess.Popen(
        [tally, "up"], cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + startup_timeout_seconds
        while READY_LINE not in (text := log.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`tally up` did not start:\n{text[-3000:]}")
            time.sleep(0.2)
        match = re.search(READY_LINE + r" (\S+)", text)
        url = match.group(1) if match else f"http://127.0.0.1:{port}"
        _wait_ready(url, startup_timeout_seconds)
        keys = json.loads((data_dir / "api-keys.json").read_text())
        runtime = _read_runtime_env(data_dir / "runtime.env")
        yield Stack(
            url=url,
            service_key=keys["service"],
            ops_key=keys.get("ops", ""),
            database_url=runtime["DATABASE_URL"],
            description=f"started by `tally up` ({sizes_text})",
            root=root,
        )
    finally:
        _stop(process, root, log)  # raises, keeping the directory and its log, if unclean
        shutil.rmtree(root, ignore_errors=True)
