"""The long-running processes freeze their startup objects out of the collector's sweeps."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.heap import freeze_startup_objects

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process goes on collecting as before


@pytest.mark.usefixtures("_unfrozen")
def test_freeze_moves_live_objects_out_of_reach_and_collects_garbage_first() -> None:
    kept: list[list[int]] = [[] for _ in range(1000)]  # noqa: F841  (alive: frozen)

    class Cycle:
        pass

    cycle = Cycle()
    cycle.me = cycle  # type: ignore[attr-defined]
    garbage = weakref.ref(cycle)
    del cycle  # garbage until a collection: must not be frozen

    frozen = freeze_startup_objects()

    assert frozen == gc.get_freeze_count() >= 1000
    # gc.get_objects() does not list frozen objects, so ask the object itself:
    # frozen, it would still be alive.
    assert garbage() is None


def _freeze_count_after(code: str) -> list[int]:
    """Run ``code`` in a fresh interpreter; return the freeze counts it prints."""
    result = subprocess.run(
        [sys.executable, "-c", f"import gc\n{code}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [int(n) for n in result.stdout.split()]


def test_the_api_server_module_freezes_once_its_app_is_built() -> None:
    [count] = _freeze_count_after("import api.asgi\nprint(gc.get_freeze_count())")
    assert count > 0


def test_the_worker_freezes_right_before_it_forks_a_pool_process() -> None:
    before, after = _freeze_count_after(
        "from celery.signals import worker_before_create_process\n"
        "import worker.app\n"
        "print(gc.get_freeze_count())\n"
        "worker_before_create_process.send(sender=None)\n"
        "print(gc.get_freeze_count())\n"
    )
    assert before == 0
    assert after > 0
