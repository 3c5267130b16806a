"""A real headless Chromium for the browser tests, from Debian's ``chromium`` package.

The browser is installed here, by the test setup, when it is missing: with
``apt-get install -y chromium`` when apt is there and the tests run as root
(``.ci/run`` installs it first on CI's fresh machines). Otherwise the tests
skip and say why, except under CI (``CI=true``), where they fail. Playwright for Python (pinned in pyproject.toml's ``dev``
extra) drives that browser through ``executable_path``; nothing is downloaded
from anywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cli.devservers import free_port
from tests.servers import TALLY

#: Where Debian's chromium package puts its launcher.
CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots the tests take, for a person to look at (ignored by git).
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Flags for a browser in a container, as root, with no display and no network of its own.
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip


def install_chromium() -> str | None:
    """Install Debian's chromium if it is missing; return why it cannot be, or None when it is there."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None:
        return "chromium is not installed and apt-get is not available to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it with apt-get needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"],
                    ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr[-500:]}"
    return (
        None
        if CHROMIUM.exists()
        else "apt-get installed chromium, yet /usr/bin/chromium is missing"
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Yield a Playwright Browser: Debian's Chromium, headless; skip with the reason when impossible."""
    reason = install_chromium()
    if reason is not None:
        if (
            os.environ.get("CI") == "true"
        ):  # .ci/run installs chromium: its absence is a failure there
            pytest.fail(reason)
        print(f"\nskipping the browser tests: {reason}")
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_api() -> Iterator[str]:
    """Run the API as production does (``tally serve web``: uvicorn) on a free port; yield its URL."""
    port = free_port()
    env = {**os.environ, "TALLY_PORT": str(port), "TALLY_HOST": "127.0.0.1",
           "TALLY_WEB_WORKERS": "1"}  # fmt: skip
    log_path = ARTIFACTS.parent / "artifacts" / f"api-{port}.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TALLY, "serve", "web"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        log_path.unlink(missing_ok=True)
