"""One scheduler at a time (celery-redbeat's lock): two beats never both schedule, a standby takes
over, and a supervised beat schedules again after Redis is emptied."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.supervise import Program, Supervisor
from tests.helpers import deposit_body, submit, wait_terminal
from tests.servers import CeleryProcess

pytestmark = pytest.mark.pipeline

#: Interval jobs and their intervals in this test, seconds (the snapshot is a daily crontab).
INTERVALS = {"sweep-stalled-transactions": 1, "reconcile": 2, "archive-entries": 3}
BEAT_ENV = {"TALLY_RECONCILE_INTERVAL_SECONDS": "2", "TALLY_ARCHIVE_INTERVAL_SECONDS": "3"}


def sends(process: CeleryProcess, job: str) -> int:
    return process.log_path.read_text(errors="replace").count(f"Sending due task {job} ")


def test_two_beats_schedule_each_job_once_per_interval_and_fail_over() -> None:
    first = CeleryProcess("beat", "beat-a", env=BEAT_ENV).start()
    second = CeleryProcess("beat", "beat-b", env=BEAT_ENV).start()
    try:
        window_seconds = 9.0
        time.sleep(window_seconds)
        for job, interval_seconds in INTERVALS.items():
            counts = sorted([sends(first, job), sends(second, job)])
            assert counts[0] == 0, f"both beats scheduled {job}: {counts}"
            assert 1 <= counts[1] <= window_seconds / interval_seconds + 2, (job, counts)

        job = "sweep-stalled-transactions"
        active, standby = (first, second) if sends(first, job) else (second, first)
        active.kill()
        deadline = time.monotonic() + 30  # the lock timeout is 6 s in the tests
        while sends(standby, job) == 0:
            assert time.monotonic() < deadline, f"standby never took over:\n{standby.log()}"
            time.sleep(0.2)
    finally:
        first.stop()
        second.stop()


# --- Beat under supervision, when Redis is emptied (design.md, "Known pitfalls") ---------------
#
# redbeat's beat exits when its lock vanishes (its tick extends the lock unguarded;
# redbeat #84, #128, #218, #230) and re-creates its entries only at start-up, so a
# FLUSHALL stops scheduling until something restarts beat. These tests run beats
# under supervisord exactly as `tally up` does (cli/supervise.py).

#: Seconds, as conftest.py sets them: redbeat's lock timeout and the sweep's interval.
LOCK_TIMEOUT_SECONDS = float(os.environ["TALLY_BEAT_LOCK_TIMEOUT_SECONDS"])
SWEEP_INTERVAL_SECONDS = float(os.environ["TALLY_SWEEP_INTERVAL_SECONDS"])
SWEEP = "sweep-stalled-transactions"
BEAT_ARGV = (sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO")


class SupervisedLog:
    """The combined output of a supervisord and its beats: its log lines and ``name | line``."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self.width = max(len(name) for name in names)

    def lines(self) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()

    def of(self, name: str, lines: list[str]) -> list[str]:
        prefix = f"{name:<{self.width}} | "
        return [line[len(prefix) :] for line in lines if line.startswith(prefix)]

    def sends(self, name: str, job: str, lines: list[str] | None = None) -> int:
        own = self.of(name, self.lines() if lines is None else lines)
        return sum(1 for line in own if f"Sending due task {job} " in line)

    def wait_for(self, what: str, found: Any, *, after: int, timeout_seconds: float) -> int:
        """Wait until ``found(lines[after:])`` is true; return the line count then."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            lines = self.lines()
            if found(lines[after:]):
                return len(lines)
            assert time.monotonic() < deadline, (
                f"{what}: not seen in {timeout_seconds}s:\n" + "\n".join(lines[-60:])
            )
            time.sleep(0.1)


@contextlib.contextmanager
def supervised_beats(run_dir: Path, names: list[str], **env: str) -> Iterator[SupervisedLog]:
    """Run one beat per name under supervisord; yield their combined output; stop them."""
    log = SupervisedLog(run_dir / "supervised.log", names)
    with log.path.open("ab") as out:
        supervisor = Supervisor(
            run_dir,
            [Program(name, BEAT_ARGV) for name in names],
            env={**os.environ, **env},
            out=out,
        )
        try:
            supervisor.start()
            yield log
        finally:
            supervisor.stop()


def test_beat_restarted_after_redis_is_emptied_schedules_the_sweep_again(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, redis_client: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    started = time.monotonic()
    with supervised_beats(tmp_path, ["beat"]) as log:
        log.wait_for("first sweep", lambda ls: log.sends("beat", SWEEP, ls), after=0,
                     timeout_seconds=60)  # fmt: skip
        startup_seconds = time.monotonic() - started
        # Pending transactions whose messages the flush will delete: no worker runs yet.
        ids = [submit(client, service_headers, deposit_body(wallet_factory())).get_json()["id"]
               for _ in range(5)]  # fmt: skip
        mark = len(log.lines())
        flushed = time.monotonic()
        redis_client.flushall()
        exited_at = log.wait_for(
            "beat exits on its lost lock", lambda ls: any("exited: beat " in line for line in ls),
            after=mark, timeout_seconds=30,
        )  # fmt: skip
        exit_seconds = time.monotonic() - flushed
        log.wait_for("a sweep sent by the restarted beat", lambda ls: log.sends("beat", SWEEP, ls),
                     after=exited_at, timeout_seconds=60)  # fmt: skip
        back_seconds = time.monotonic() - flushed
        print(f"\nbeat: start-up {startup_seconds:.1f}s; after FLUSHALL exited in "
              f"{exit_seconds:.1f}s, sweeping again in {back_seconds:.1f}s")  # fmt: skip
        # Its lock is gone at once, so it only needs to notice (one loop interval),
        # start again and wait one sweep interval; start-up time as measured above.
        assert back_seconds < LOCK_TIMEOUT_SECONDS + SWEEP_INTERVAL_SECONDS + startup_seconds, (
            back_seconds, startup_seconds,
        )  # fmt: skip
        worker = CeleryProcess("worker", "beat-flush").start()
        try:
            # Only the sweep of the restarted beat can publish these again.
            done = wait_terminal(ids, timeout_seconds=60, context=worker.log())
        finally:
            worker.stop()
        assert {row["status"] for row in done.values()} == {"completed"}, done


def test_two_supervised_beats_keep_one_scheduler_through_a_redis_flush(
    redis_client: Any, tmp_path: Path
) -> None:
    names = ["beat-a", "beat-b"]
    with supervised_beats(tmp_path, names, **BEAT_ENV) as log:

        def started_both(lines: list[str]) -> bool:
            return all(any("beat: Starting" in x for x in log.of(n, lines)) for n in names)

        log.wait_for("both beats started", started_both, after=0, timeout_seconds=60)
        log.wait_for("a sweep", lambda ls: any(log.sends(n, SWEEP, ls) for n in names),
                     after=0, timeout_seconds=60)  # fmt: skip
        mark = len(log.lines())
        flushed = time.monotonic()
        redis_client.flushall()
        exited_at = log.wait_for(
            "the active beat exits on its lost lock",
            lambda ls: any("exited: beat-" in line for line in ls), after=mark, timeout_seconds=30,
        )  # fmt: skip
        exited = next(n for n in names if any(f"exited: {n} " in x for x in log.lines()[mark:]))
        # Settled: the exited beat runs again (and waits on the lock or holds it), and
        # a sweep was sent after the flush.
        log.wait_for(f"{exited} starting again",
                     lambda ls: any("beat: Starting" in x for x in log.of(exited, ls)),
                     after=exited_at, timeout_seconds=60)  # fmt: skip
        log.wait_for("a sweep after the flush",
                     lambda ls: any(log.sends(n, SWEEP, ls) for n in names),
                     after=exited_at, timeout_seconds=60)  # fmt: skip
        before = log.lines()
        window_seconds = 9.0
        time.sleep(window_seconds)
        window = log.lines()[len(before) :]
        for job, interval_seconds in INTERVALS.items():
            counts = sorted(log.sends(name, job, window) for name in names)
            assert counts[0] == 0, f"both beats scheduled {job} after the flush: {counts}"
            assert 1 <= counts[1] <= window_seconds / interval_seconds + 2, (job, counts)
        # Nor did both schedule during the hand-over: one sweep per interval at most.
        elapsed_seconds = time.monotonic() - flushed
        after_flush = log.lines()[mark:]
        total = sum(log.sends(name, SWEEP, after_flush) for name in names)
        assert total <= elapsed_seconds / SWEEP_INTERVAL_SECONDS + 2, (total, elapsed_seconds)
