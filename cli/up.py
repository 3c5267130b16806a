"""``tally up``: run the whole stack on this machine, embedded servers included.

With ``DATABASE_URL`` / ``REDIS_URL`` unset it starts a private PostgreSQL and
Redis (cli/devservers.py) with their data under ``.tally/``; it writes the URLs
it uses to ``.tally/runtime.env`` so every other ``tally`` command run from the
same directory reaches the same servers; migrates; creates a ``service`` and an
``ops`` key on first start; then runs the Procfile's processes.

Everything runs under supervisord (cli/supervise.py): the embedded servers
start first, the Procfile's processes once the database is migrated, and any
of them that exits is started again instead of taking the others down
(docs/operations.md, "Process supervision"). Each program's output goes to
``.tally/logs/<program>.log``; supervisord's own lines (spawned, exited) to
stdout. Ctrl-C or SIGTERM stops every process it started, embedded servers
included.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click

from cli.devservers import EmbeddedPostgres, EmbeddedRedis, free_port, port_is_free
from cli.supervise import Program, Supervisor, procfile_programs
from shared.config import DATA_DIR, RUNTIME_ENV_FILE
from shared.metrics import fresh_multiprocess_dir

PORTS_FILE = DATA_DIR / "ports.json"
KEYS_FILE = DATA_DIR / "api-keys.json"
#: Used when ``tally up`` runs outside a checkout (no Procfile in the directory).
DEFAULT_PROCFILE = (
    "web: tally serve web\nworker: tally serve worker\nwebhooks: tally serve webhooks\n"
    "beat: tally serve beat\n"
)
#: What ``tally up --flower`` adds to the Procfile's processes.
FLOWER_PROCFILE = "flower: tally serve flower\n"


def _ports() -> dict[str, int]:
    """Return the embedded servers' ports: last run's if still free, else new free ones."""
    saved: dict[str, int] = {}
    if PORTS_FILE.exists():
        saved = json.loads(PORTS_FILE.read_text())
    ports = {}
    for name, default in (("postgres", 54329), ("redis", 63799)):
        port = saved.get(name, default)
        ports[name] = port if port_is_free(port) else free_port()
    PORTS_FILE.write_text(json.dumps(ports))
    return ports


def _write_runtime_env(database_url: str, redis_url: str) -> None:
    RUNTIME_ENV_FILE.write_text(f"DATABASE_URL={database_url}\nREDIS_URL={redis_url}\n")


def _dev_keys() -> dict[str, str]:
    """Create a service and an ops key on first start; return their secrets.

    The secrets of these two development keys are kept in ``.tally/api-keys.json``
    (mode 0600) so that ``tally up`` can print them again; keys made with
    ``tally keys create`` are printed once and never stored.
    """
    if KEYS_FILE.exists():
        return dict(json.loads(KEYS_FILE.read_text()))
    from shared import db
    from shared.services.api_keys import Role, create_api_key

    secrets = {}
    with db.transaction() as session:
        for role in Role:
            _, secret = create_api_key(session, role=role, name=f"tally up {role.value}")
            secrets[role.value] = secret
    KEYS_FILE.write_text(json.dumps(secrets))
    KEYS_FILE.chmod(0o600)
    return secrets


def _announce_when_ready(
    url: str, secrets: dict[str, str], flower_url: str | None, supervisor: Supervisor
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    click.secho(f"\nTally is up at {url}", fg="green", bold=True)
    click.echo(f"  service key: {secrets['service']}")
    click.echo(f"  ops key:     {secrets['ops']}")
    click.echo(f"  dashboard:   {url}/ (sign in with the ops key)")
    click.echo(f"  metrics:     {url}/metrics")
    if flower_url is not None:
        click.echo(f"  flower:      {flower_url}")
    click.echo(f"  logs:        {supervisor.log_dir}/<program>.log, or")
    click.echo(f"               supervisorctl -c {supervisor.config_path} tail -f web")
    click.echo('  try: curl -H "Authorization: Bearer $KEY" ' + url + "/v1/wallets\n")


def _app_env() -> dict[str, str]:
    """Return the environment of supervisord and its programs, with a fresh metrics directory."""
    env = dict(os.environ)
    # One metrics directory for every process, emptied at start: /metrics sums them.
    metrics_dir = fresh_multiprocess_dir(DATA_DIR.resolve() / "metrics")
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    # A terminal reads the programs' output: structlog's console lines, not JSON.
    env.setdefault("TALLY_LOG_FORMAT", "console")
    # A development stack on one machine: let webhooks reach receivers on loopback
    # (examples/webhook_receiver.py). Off by default elsewhere (SSRF: docs/webhooks.md).
    env.setdefault("TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    # The Procfile calls `tally`: make this interpreter's scripts directory win.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block: a second Ctrl-C must not cut a shutdown short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Servers:
    """The embedded servers ``tally up`` supervises: those whose URL is not in the environment."""

    def __init__(self) -> None:
        database_url = os.environ.get("DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.programs: list[Program] = []
        if database_url is None or redis_url is None:
            ports = _ports()
        if database_url is None:
            self.postgres = EmbeddedPostgres(DATA_DIR / "postgres", ports["postgres"])
            self.postgres.prepare()
            # A server left running by a `tally up` that was killed outright holds
            # the data directory: stop it, so the supervised one can start.
            self.postgres.stop()
            self.programs.append(
                # SIGINT is PostgreSQL's fast shutdown (PostgreSQL docs, "Shutting Down the Server").
                Program("postgres", tuple(self.postgres.server_args()), priority=10,
                        user=self.postgres.system_user, stopsignal="INT", stopwaitsecs=30)
            )  # fmt: skip
            database_url = self.postgres.url_for("tally")
        if redis_url is None:
            self.redis = EmbeddedRedis(DATA_DIR / "redis", ports["redis"])
            server_args = tuple(self.redis.server_args(log_to_file=False))
            self.programs.append(Program("redis", server_args, priority=20))
            redis_url = self.redis.url
        self.database_url: str = database_url
        self.redis_url: str = redis_url

    def wait_ready(self) -> None:
        """Wait until the embedded servers answer; create the ``tally`` database.

        Raises:
            RuntimeError: a server did not answer in time (its output is above).
        """
        if self.postgres is not None:
            self.postgres.wait_ready(timeout_seconds=120)
            self.postgres.create_database("tally")
            click.echo(f"PostgreSQL: {self.database_url} (data in {self.postgres.data_dir})")
        if self.redis is not None:
            self.redis.wait_ready(timeout_seconds=60)
            click.echo(f"Redis:      {self.redis_url} (data in {self.redis.data_dir})")


@click.command("up")
@click.option(
    "--flower", "with_flower", is_flag=True,
    help="Also run Flower (Celery's monitor) on TALLY_FLOWER_PORT (5555), supervised.",
)  # fmt: skip
def up(with_flower: bool) -> None:
    """Start PostgreSQL and Redis if needed, migrate, and run the API, worker and beat."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # SIGTERM must stop what we started, like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    supervisor: Supervisor | None = None
    servers: _Servers | None = None
    code = 0
    try:
        servers = _Servers()
        _write_runtime_env(servers.database_url, servers.redis_url)
        os.environ["DATABASE_URL"] = servers.database_url
        os.environ["REDIS_URL"] = servers.redis_url
        procfile_path = Path("Procfile")
        apps = procfile_programs(
            procfile_path.read_text() if procfile_path.exists() else DEFAULT_PROCFILE
        )
        if with_flower:  # started and stopped with the Procfile's processes, last of them
            apps += procfile_programs(FLOWER_PROCFILE, priority=100 + len(apps))
        supervisor = Supervisor(DATA_DIR, [*servers.programs, *apps], env=_app_env())
        supervisor.start()
        servers.wait_ready()

        from shared.config import get_settings
        from shared.migrations import migrate_database

        migrate_database()
        secrets = _dev_keys()
        settings = get_settings()
        url = f"http://{settings.host}:{settings.port}"
        # The app processes need a migrated database: they start only now.
        supervisor.start_programs(app.name for app in apps)
        flower_url = f"http://{settings.host}:{settings.flower_port}" if with_flower else None
        threading.Thread(
            target=_announce_when_ready, args=(url, secrets, flower_url, supervisor), daemon=True
        ).start()
        # supervisord returns on `supervisorctl shutdown` (0) or a fatal error of its own.
        code = supervisor.wait()
        click.echo(f"supervisord exited with {code}", err=True)
    except KeyboardInterrupt:
        code = 0
    finally:
        with _signals_ignored():
            if supervisor is not None:
                supervisor.stop()
            if servers is not None and servers.postgres is not None:
                servers.postgres.stop()  # a no-op unless supervisord could not stop it
    sys.exit(code)
