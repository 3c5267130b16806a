"""Drive a floor server with ``tally bench``'s own load generator instead of wrk.

``python -m bench.floor.generator URL WALLETS_FILE [SECONDS]`` runs
``bench.loadgen``'s closed loop (16 connections, the ``uniform`` workload, the
key ``floor-key``) against ``URL`` for SECONDS (default 10) and prints the
submissions answered 202 per second and the generator's CPU share (1 = one
core). ``end_to_end.sh`` uses it with ``FLOOR_GENERATOR=tally``, so that the floor
pays for the same client, on the same two cores, as Tally does under
``tally bench http --workload uniform``; wrk costs a fraction of it.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

from bench.loadgen import LoadPlan, LoadResult, generate

CONNECTIONS = 16


def main() -> None:
    """Run the closed loop and print what it measured (one line)."""
    url, wallets_file = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    plan = LoadPlan(
        url=url,
        service_key="floor-key",
        workload="uniform",
        wallets=Path(wallets_file).read_text().split(),
        duration_seconds=seconds,
        connections=CONNECTIONS,
    )
    progress = SimpleNamespace(value=0)  # what the parent's progress bar would read
    results: queue.Queue[tuple[str, LoadResult | str]] = queue.Queue()
    generate(plan, progress, threading.Event(), results)
    status, result = results.get()
    if not isinstance(result, LoadResult):
        sys.exit(f"the generator failed ({status}):\n{result}")
    accepted = len(result.accepted_ids)
    errors = {k: v for k, v in result.errors.items() if not k.startswith("health:")}
    print(
        f"accepted {accepted} in {result.submit_window_seconds:.1f} s "
        f"({accepted / result.submit_window_seconds:.0f}/s), generator CPU share "
        f"{result.cpu_seconds / result.wall_seconds:.3f}, errors {errors}"
    )


if __name__ == "__main__":
    main()
