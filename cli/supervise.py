"""Run Tally's processes under supervisord, in the foreground, with a config generated here.

``tally up`` (cli/up.py) builds one :class:`Program` per Procfile line and per
embedded server, and :class:`Supervisor` writes ``supervisord.conf`` into the
data directory, runs ``supervisord`` (``nodaemon=true``) and talks to it over
its XML-RPC unix socket. A program that exits is started again; see
docs/operations.md, "Process supervision", for what restarts when and why
supervisord rather than honcho.

Files under the data directory: ``supervisord.conf``, ``supervisord.sock``,
``supervisord.pid``, ``supervisord.log`` (supervisord's own log, also printed
on stdout), and ``output/<program>.fifo``: supervisord writes each program's
output into its FIFO and :class:`OutputRelay` prints it line by line, prefixed
with the program's name, because supervisord itself cannot prefix lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pwd
import re
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

#: A program that dies sooner than this after its start is a failed start, retried
#: with a linear backoff (1 s, 2 s, 3 s, ...); later exits restart it at once
#: (supervisord docs, "[program:x] Section Settings", startsecs/startretries).
START_SECONDS = 3
#: Failed starts in a row before supervisord gives up (FATAL): about 80 minutes of
#: linear backoff, long enough to outlast any outage of PostgreSQL or Redis.
START_RETRIES = 100
#: An AF_UNIX socket path must fit in sun_path (108 bytes on Linux).
SOCKET_PATH_MAX = 100
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Program:
    """One program supervisord runs and restarts.

    Args:
        name: the program's name in logs, output prefixes and XML-RPC calls.
        argv: the command line; supervisord runs it without a shell.
        autostart: True starts it with supervisord; False waits for
            :meth:`Supervisor.start_programs` (the app, after migrations).
        priority: start order ascending, stop order descending.
        user: the user to run it as (needs supervisord to run as root), or None.
        stopsignal: the signal that asks it to stop (``TERM``, ``INT``, ...).
        stopwaitsecs: seconds between the stop signal and SIGKILL to its process group.
    """

    name: str
    argv: tuple[str, ...]
    autostart: bool = True
    priority: int = 100
    user: str | None = None
    stopsignal: str = "TERM"
    stopwaitsecs: int = 20


def parse_procfile(text: str) -> dict[str, str]:
    """Parse Procfile ``text`` into ``{name: command}`` in file order; skip blanks and comments.

    Raises:
        ValueError: a line is neither blank, a comment, nor ``name: command``.
    """
    processes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _PROCFILE_LINE.match(line.strip())
        if match is None:
            raise ValueError(f"Procfile line {number} is not 'name: command': {line!r}")
        processes[match.group(1)] = match.group(2).strip()
    return processes


def procfile_programs(text: str, *, priority: int = 100) -> list[Program]:
    """Return one not-autostarted :class:`Program` per Procfile process, in file order.

    Each command runs as ``/bin/sh -c 'exec <command>'``: the shell expands
    variables as Procfile runners do, then ``exec`` replaces it, so the
    supervised pid is the server itself and signals reach it directly.
    supervisord stops them in the reverse of the file's order, one at a time.
    """
    return [
        Program(
            name=name,
            argv=("/bin/sh", "-c", f"exec {command}"),
            autostart=False,
            priority=priority + index,
            stopwaitsecs=25,  # gunicorn's --graceful-timeout is 20 s (cli/serve.py)
        )
        for index, (name, command) in enumerate(parse_procfile(text).items())
    ]


def _value(value: object) -> str:
    # supervisord expands %(name)s in values: a literal % must be doubled.
    return str(value).replace("%", "%%")


def render_config(
    programs: Iterable[Program], *, run_dir: Path, socket_path: Path, outputs: Mapping[str, Path]
) -> str:
    """Return the text of a supervisord.conf for ``programs``.

    Args:
        programs: what to run.
        run_dir: where the pid file and supervisord's log go (absolute).
        socket_path: the XML-RPC unix socket (absolute, at most ``SOCKET_PATH_MAX`` bytes).
        outputs: ``{program name: file}`` that receives its stdout and stderr
            (a FIFO of :class:`OutputRelay`, or ``/dev/stdout``).
    """
    lines = [
        "; Generated by `tally up` (cli/supervise.py) on each start; edits are overwritten.",
        "[unix_http_server]",
        f"file={_value(socket_path)}",
        "chmod=0700",
        "",
        "[supervisord]",
        "nodaemon=true",
        # Running as whoever started us is intended: this silences supervisord's
        # warning about root, and lets root drop to embedded_postgres per program.
        f"user={_value(pwd.getpwuid(os.getuid()).pw_name)}",
        f"logfile={_value(run_dir / 'supervisord.log')}",
        "logfile_maxbytes=5MB",
        "logfile_backups=1",
        # INFO carries "spawned: 'worker' ..." and "exited: worker (terminated by
        # SIGKILL; not expected)", which nodaemon mode also prints on stdout.
        "loglevel=info",
        f"pidfile={_value(run_dir / 'supervisord.pid')}",
        f"childlogdir={_value(run_dir)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_value(socket_path)}",
    ]
    for program in programs:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_value(shlex.join(program.argv))}",
            f"autostart={str(program.autostart).lower()}",
            # Every exit of a long-running server is a fault, whatever its exit code.
            "autorestart=true",
            f"startsecs={START_SECONDS}",
            f"startretries={START_RETRIES}",
            f"priority={program.priority}",
            f"stopsignal={program.stopsignal}",
            f"stopwaitsecs={program.stopwaitsecs}",
            # The stop signal goes to the main process only, so it shuts its children
            # down in order (celery's warm shutdown, gunicorn's graceful stop,
            # PostgreSQL's fast shutdown); a celery pool child that got SIGTERM itself
            # would die mid-task. The SIGKILL after stopwaitsecs goes to the whole
            # process group, so no child outlives a main process that hung.
            "stopasgroup=false",
            "killasgroup=true",
            f"stdout_logfile={_value(outputs[program.name])}",
            "stdout_logfile_maxbytes=0",
            "redirect_stderr=true",
        ]
        if program.user is not None:
            lines.append(f"user={_value(program.user)}")
    return "\n".join(lines) + "\n"


class OutputRelay:
    """Copy each program's output to ``out``, every line prefixed with the program's name.

    One FIFO per program under ``fifo_dir``; supervisord opens it as the
    program's ``stdout_logfile``. The relay holds a writer of its own on each
    FIFO so that a reader never sees end-of-file between two spawns; :meth:`close`
    drops it, drains what is left and stops the thread.

    Args:
        fifo_dir: where the FIFOs are made (recreated on each start).
        names: the programs' names.
        out: a binary stream (``sys.stdout.buffer``).
    """

    def __init__(self, fifo_dir: Path, names: Iterable[str], out: BinaryIO) -> None:
        self.out = out
        self.paths: dict[str, Path] = {}
        self._readers: dict[int, str] = {}
        self._writers: list[int] = []
        self._width = 0
        self._thread: threading.Thread | None = None
        fifo_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = fifo_dir / f"{name}.fifo"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path, 0o600)
            # Non-blocking open of the read end first: a FIFO's write end cannot be
            # opened before a reader exists.
            self._readers[os.open(path, os.O_RDONLY | os.O_NONBLOCK)] = name
            self._writers.append(os.open(path, os.O_WRONLY))
            self.paths[name] = path
            self._width = max(self._width, len(name))

    def start(self) -> None:
        """Start relaying in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="output-relay", daemon=True)
        self._thread.start()

    def close(self, *, timeout_seconds: float = 5.0) -> None:
        """Stop relaying once what supervisord wrote is printed; close the FIFOs."""
        for fd in self._writers:
            os.close(fd)
        self._writers.clear()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        for fd in list(self._readers):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _emit(self, name: str, line: bytes) -> None:
        prefix = f"{name:<{self._width}} | ".encode()
        with contextlib.suppress(OSError, ValueError):
            self.out.write(prefix + line.rstrip(b"\r\n") + b"\n")
            self.out.flush()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        pending: dict[int, bytes] = {}
        for fd in self._readers:
            selector.register(fd, selectors.EVENT_READ)
            pending[fd] = b""
        while selector.get_map():
            for key, _ in selector.select():
                fd = int(key.fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                name = self._readers[fd]
                if not data:  # end of file: supervisord and our own writer are gone
                    selector.unregister(fd)
                    if pending[fd]:
                        self._emit(name, pending[fd])
                    continue
                *lines, pending[fd] = (pending[fd] + data).split(b"\n")
                for line in lines:
                    self._emit(name, line)
        selector.close()


def _socket_path(run_dir: Path) -> Path:
    path = run_dir / "supervisord.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    # A deep data directory: keep the socket short, still unique per data directory.
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tally-supervisord-{digest}.sock"


def _die_with_parent(libc: Any) -> None:
    # Runs in the child before exec: if `tally up` is killed outright (SIGKILL),
    # supervisord gets SIGTERM and stops its programs instead of living on as an
    # orphan (prctl(2), PR_SET_PDEATHSIG; Linux only).
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """A foreground supervisord running ``programs``, configured under ``run_dir``.

    Args:
        run_dir: the data directory (``.tally``); made absolute.
        programs: what supervisord runs; names must be unique.
        env: the environment of supervisord and so of every program.
        out: a binary stream with a file descriptor (default: stdout) that
            receives supervisord's log and the programs' prefixed output; a
            file shared with other writers must be opened for appending.
    """

    def __init__(
        self,
        run_dir: Path,
        programs: Iterable[Program],
        *,
        env: Mapping[str, str],
        out: BinaryIO | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.programs = list(programs)
        self.env = dict(env)
        self.out = out if out is not None else sys.stdout.buffer
        self.config_path = self.run_dir / "supervisord.conf"
        self.socket_path = _socket_path(self.run_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self._relay: OutputRelay | None = None

    def rpc(self) -> Any:
        """Return an XML-RPC proxy on supervisord's unix socket (``proxy.supervisor.*``)."""
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        """Write the config, start supervisord and wait until it answers over its socket.

        Programs with ``autostart`` are being started when this returns; it
        does not wait for them to be ready.

        Raises:
            RuntimeError: supervisord exited or did not answer within ``timeout_seconds``.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._relay = OutputRelay(
            self.run_dir / "output", [p.name for p in self.programs], self.out
        )
        self.config_path.write_text(
            render_config(
                self.programs,
                run_dir=self.run_dir,
                socket_path=self.socket_path,
                outputs=self._relay.paths,
            )
        )
        libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config_path)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.out,  # its own log lines ("spawned: ...", "exited: ...")
            # Its own session: a terminal's Ctrl-C reaches `tally up` only, which
            # then stops supervisord once, in order.
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(libc),
        )
        self._relay.start()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"supervisord exited with {self.process.returncode}; see its output above"
                )
            with contextlib.suppress(OSError, xmlrpc.client.Fault):
                if self.rpc().supervisor.getState()["statename"] == "RUNNING":
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"supervisord did not answer on {self.socket_path} in {timeout_seconds}s"
        )

    def start_programs(self, names: Iterable[str]) -> None:
        """Ask supervisord to start ``names`` (programs with ``autostart`` false); do not wait.

        Raises:
            xmlrpc.client.Fault: supervisord refused (e.g. ``BAD_NAME``).
        """
        proxy = self.rpc()
        for name in names:
            proxy.supervisor.startProcess(name, False)

    def wait(self) -> int:
        """Block until supervisord exits; return its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, *, timeout_seconds: float = 120.0) -> None:
        """Stop supervisord, which stops every program in reverse priority order; idempotent.

        supervisord SIGKILLs a program's process group after its ``stopwaitsecs``;
        if supervisord itself is still running after ``timeout_seconds``, it is
        SIGKILLed (its programs are then orphans: the only case that leaves any).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._relay is not None:
            self._relay.close()
            self._relay = None
