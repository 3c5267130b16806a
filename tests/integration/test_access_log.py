"""The API's access lines, written together a moment after they are logged, all reach its log.

The API runs as production runs it (``tally serve web``, two uvicorn worker
processes) with ``TALLY_WEB_LOG_FLUSH_SECONDS=1``: the requests below take a
fraction of that here, so their lines are still waiting in the processes'
buffers when the server is told to stop, and a normal stop writes them
(``ThreadPoolWSGI``'s lifespan). On a machine slow enough that a second
passes first, some lines are written by time and the test checks less, never
wrongly; tests/unit/test_wsgi_pool.py checks the shutdown's write without a
clock.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests

from api.observe import REQUEST_ID_HEADER
from tests.servers import serve_web

REQUESTS = 40


def test_every_access_line_is_written_when_the_api_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLY_WEB_LOG_FLUSH_SECONDS", "1")
    monkeypatch.setenv("TALLY_LOG_LEVEL", "INFO")  # the tests' default is WARNING
    ids = [str(uuid.uuid4()) for _ in range(REQUESTS)]
    with serve_web(tmp_path, workers=2) as (url, _):
        for request_id in ids:
            # A new connection each, so that both processes serve some of them.
            response = requests.get(
                f"{url}/healthz",
                headers={REQUEST_ID_HEADER: request_id, "Connection": "close"},
                timeout=10,
            )
            assert response.status_code == 200
    (log,) = tmp_path.glob("web-*.log")
    text = log.read_text()
    missing = [request_id for request_id in ids if request_id not in text]
    assert not missing, f"{len(missing)} access lines lost at the stop:\n{text[-3000:]}"
