"""``tally up``: run the whole stack on this machine, embedded servers included.

With ``DATABASE_URL`` / ``REDIS_URL`` unset it starts a private PostgreSQL and
Redis (cli/devservers.py) with their data under ``.tally/``; it writes the URLs
it uses to ``.tally/runtime.env`` so every other ``tally`` command run from the
same directory reaches the same servers; migrates; creates a ``service`` and an
``ops`` key on first start; then runs the Procfile's processes under honcho.
Ctrl-C or SIGTERM stops every process it started, embedded servers included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click

from cli.devservers import EmbeddedPostgres, EmbeddedRedis, free_port, port_is_free
from shared.config import DATA_DIR, RUNTIME_ENV_FILE

PORTS_FILE = DATA_DIR / "ports.json"
KEYS_FILE = DATA_DIR / "api-keys.json"
#: Used when ``tally up`` runs outside a checkout (no Procfile in the directory).
DEFAULT_PROCFILE = "web: tally serve web\nworker: tally serve worker\nbeat: tally serve beat\n"


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


def _announce_when_ready(url: str, secrets: dict[str, str]) -> None:
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
    click.echo('  try: curl -H "Authorization: Bearer $KEY" ' + url + "/v1/wallets\n")


@click.command("up")
def up() -> None:
    """Start PostgreSQL and Redis if needed, migrate, and run the API, worker and beat."""
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []

    def _stop_servers(*_: object) -> None:
        for server in reversed(servers):
            server.stop()
        servers.clear()

    # SIGTERM must stop what we started, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        database_url = os.environ.get("DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        if database_url is None or redis_url is None:
            ports = _ports()
        if database_url is None:
            postgres = EmbeddedPostgres(DATA_DIR / "postgres", ports["postgres"])
            servers.append(postgres)
            postgres.start()
            database_url = postgres.create_database("tally")
            click.echo(f"PostgreSQL: {database_url} (data in {postgres.data_dir})")
        if redis_url is None:
            redis_server = EmbeddedRedis(DATA_DIR / "redis", ports["redis"])
            servers.append(redis_server)
            redis_url = redis_server.start()
            click.echo(f"Redis:      {redis_url} (data in {redis_server.data_dir})")
        _write_runtime_env(database_url, redis_url)
        os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = database_url, redis_url

        from cli.main import migrate_database
        from shared.config import get_settings

        migrate_database()
        secrets = _dev_keys()
        settings = get_settings()
        url = f"http://{settings.host}:{settings.port}"

        procfile_path = Path("Procfile")
        procfile = parse_procfile(
            procfile_path.read_text() if procfile_path.exists() else DEFAULT_PROCFILE
        )
        manager = Manager(Printer(sys.stdout))
        env = dict(os.environ)
        # One metrics directory for every process, emptied at start: /metrics sums them.
        metrics_dir = DATA_DIR.resolve() / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        # The Procfile calls `tally`: make this interpreter's scripts directory win.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        for name, process in procfile.processes.items():
            manager.add_process(name, process, env=env)
        threading.Thread(target=_announce_when_ready, args=(url, secrets), daemon=True).start()
        manager.loop()
        code = manager.returncode
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop_servers()
    sys.exit(code or 0)
