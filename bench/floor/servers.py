"""The floor app behind each bridge from ASGI to WSGI that ``measure.sh`` compares.

- ``bench.floor.servers:pool``: Tally's ``api.wsgi_pool.ThreadPoolWSGI`` (what ``tally serve web`` runs);
- ``bench.floor.servers:a2wsgi``: a2wsgi's ``WSGIMiddleware``.

granian's WSGI server and uvicorn's ``--interface wsgi`` serve ``bench.floor.app:app`` directly.
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware

from api.wsgi_pool import ThreadPoolWSGI
from bench.floor.app import app as flask_app

THREADS = 8

pool = ThreadPoolWSGI(flask_app, THREADS, body_bytes_max=64 * 1024)
a2wsgi = WSGIMiddleware(flask_app, workers=THREADS)
