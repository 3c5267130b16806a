"""A revoked key stops working in every API process once its cache entry expires.

The API runs as production runs it (``tally serve web``) with two uvicorn
worker processes, each with its own key cache; requests on fresh
connections land on either.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner

from cli.main import main
from tests.servers import serve_web

#: Requests on fresh connections per check: with two processes, the chance that
#: one process gets none of them is 2 * 2**-40.
PROBES = 40


@pytest.fixture(scope="module")
def two_process_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the API in two processes (``tally serve web``); yield its URL."""
    with serve_web(tmp_path_factory.mktemp("web2"), workers=2) as (url, _):
        yield url


def _statuses(url: str, secret: str) -> list[int]:
    """Send ``PROBES`` requests, each on a new connection, and return their statuses."""
    headers = {"Authorization": f"Bearer {secret}", "Connection": "close"}
    return [
        requests.get(f"{url}/v1/wallets?limit=1", headers=headers, timeout=10).status_code
        for _ in range(PROBES)
    ]


def test_a_revoked_key_is_refused_by_every_process(two_process_server: str) -> None:
    """Each process caches a key for ``KNOWN_KEY_TTL_SECONDS`` (1 s) at most; the wait's
    bound is far above that, so a slow machine makes the test slower, never red."""
    created = CliRunner().invoke(main, ["keys", "create", "--role", "service", "--name", "x-proc"])
    key_id = created.output.split("id:")[1].split()[0]
    secret = created.output.split("secret: ")[1].strip()
    assert set(_statuses(two_process_server, secret)) == {200}  # cached in both processes
    assert CliRunner().invoke(main, ["keys", "revoke", key_id]).exit_code == 0
    revoked_at = time.monotonic()
    while set(_statuses(two_process_server, secret)) != {401}:
        assert time.monotonic() - revoked_at < 60, "a process still accepts the revoked key"
    assert set(_statuses(two_process_server, secret)) == {401}


def _requests_counted(url: str) -> float:
    """Return the count of ``GET /healthz`` answered 200 in one scrape of ``/metrics``."""
    text = requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
    prefix = 'tally_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_every_scrape_counts_the_requests_of_both_processes(two_process_server: str) -> None:
    """``tally serve web`` gives its processes one metrics directory when none is set."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # what this test is about
    for _ in range(PROBES):
        requests.get(f"{two_process_server}/healthz", headers={"Connection": "close"}, timeout=10)
    counts = {_requests_counted(two_process_server) for _ in range(PROBES)}
    # One process's own counts would differ between scrapes, and be below PROBES.
    assert len(counts) == 1 and counts.pop() >= PROBES, counts
