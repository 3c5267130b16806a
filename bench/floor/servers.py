"""The floor app behind each bridge from ASGI to WSGI that ``measure.sh`` compares.

- ``bench.floor.servers:pool``: Tally's ``api.wsgi_pool.ThreadPoolWSGI`` (what ``tally serve web`` runs);
- ``bench.floor.servers:a2wsgi``: a2wsgi's ``WSGIMiddleware``;
- ``bench.floor.servers:same_work``: ``bench.floor.same_work`` in Tally's pool.

granian's WSGI server and uvicorn's ``--interface wsgi`` serve ``bench.floor.app:app`` (or
``bench.floor.same_work:app``) directly. ``FLOOR_THREADS`` sets the pool's threads (8).
"""

from __future__ import annotations

import os

from a2wsgi import WSGIMiddleware

from api.wsgi_pool import ThreadPoolWSGI
from bench.floor.app import app as flask_app

THREADS = int(os.environ.get("FLOOR_THREADS", "8"))

pool = ThreadPoolWSGI(flask_app, THREADS, body_bytes_max=64 * 1024)
a2wsgi = WSGIMiddleware(flask_app, workers=THREADS)


def same_work() -> ThreadPoolWSGI:
    """Return ``bench.floor.same_work``'s app in Tally's pool (``uvicorn --factory``).

    A factory, so that ``FLOOR_STAGES`` is read only when this app is served.
    """
    from bench.floor.same_work import app as same_work_app

    return ThreadPoolWSGI(same_work_app, THREADS, body_bytes_max=64 * 1024)
