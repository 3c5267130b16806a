"""A scratch database for the in-process benchmarks: ``DATABASE_URL``, or an embedded one.

``tally bench maintenance`` and ``tally bench metadata`` seed a database of
their own, migrate it and time work on it without the rest of the stack.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli.devservers import EmbeddedPostgres, free_port
from shared.db import reset_engine
from shared.migrations import migrate_database


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Yield the URL of a migrated database, and this process's settings pointed at it.

    With ``DATABASE_URL`` set, that database; otherwise an embedded, durable
    PostgreSQL in a temporary directory, stopped and removed on exit.
    ``TALLY_DATA_DIR`` defaults to that directory.

    Args:
        prefix: the temporary directory's name prefix (``tally-bench-maint-``).
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("TALLY_DATA_DIR", str(root / "data"))
    postgres = None
    url = os.environ.get("DATABASE_URL")
    if url is None:
        postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=True)
        postgres.start()
        url = postgres.create_database("tally_bench")
        os.environ["DATABASE_URL"] = url
    try:
        migrate_database()
        yield url
    finally:
        if postgres is not None:
            reset_engine()
            postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
