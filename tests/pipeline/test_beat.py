"""One scheduler at a time (celery-redbeat's lock): two beats never both schedule, a standby takes
over, and a supervised beat schedules again after Redis is emptied."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
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


def wait_until(what: str, done: Callable[[], bool], *, timeout_seconds: float = 120) -> None:
    """Wait for ``done()`` to hold; the bound only catches a hang, far above the expected time."""
    deadline = time.monotonic() + timeout_seconds
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_seconds} s"
        time.sleep(0.2)


def test_two_beats_schedule_each_job_once_per_interval_and_fail_over() -> None:
    started = time.monotonic()  # before either beat: every send counted falls after it
    first = CeleryProcess("beat", "beat-a", env=BEAT_ENV).start()
    second = CeleryProcess("beat", "beat-b", env=BEAT_ENV).start()
    try:
        for job in INTERVALS:  # each job sent a few times: the schedule is running
            wait_until(f"{job} sent three times", lambda job=job: sends(first, job) + sends(second, job) >= 3)  # fmt: skip
        elapsed_seconds = time.monotonic() - started
        for job, interval_seconds in INTERVALS.items():
            counts = sorted([sends(first, job), sends(second, job)])
            assert counts[0] == 0, f"both beats scheduled {job}: {counts}"
            # Never more often than its interval (a slow machine only sends fewer).
            assert counts[1] <= elapsed_seconds / interval_seconds + 3, (job, counts)

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


# --- Beat under supervision, when Redis is emptied (docs/architecture.md, "Known pitfalls") ---------------
#
# redbeat's beat exits when its lock vanishes (its tick extends the lock unguarded;
# redbeat #84, #128, #218, #230) and re-creates its entries only at start-up, so a
# FLUSHALL stops scheduling until something restarts beat. These tests run beats
# under supervisord exactly as `tally up` does (cli/supervise.py).

#: Seconds, as conftest.py sets it: the sweep's interval.
SWEEP_INTERVAL_SECONDS = float(os.environ["TALLY_SWEEP_INTERVAL_SECONDS"])
SWEEP = "sweep-stalled-transactions"
BEAT_ARGV = (sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO")


class SupervisedLog:
    """What a supervisord and its beats wrote: its own lines, and each beat's log file.

    ``lines()`` reads supervisord's lines ("spawned: ...", "exited: ..."),
    ``lines(name)`` what beat ``name`` wrote (supervisord writes it to
    ``logs/<name>.log``, appending across restarts).
    """

    def __init__(self, path: Path, supervisor: Supervisor) -> None:
        self.path = path
        self.supervisor = supervisor

    def lines(self, name: str | None = None) -> list[str]:
        path = self.path if name is None else self.supervisor.log_path(name)
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def said(self, text: str) -> Callable[[str], bool]:
        """Return a test of a line: does it carry ``text``."""
        return lambda line: text in line

    def sends(self, job: str, lines: list[str]) -> int:
        return sum(map(self.said(f"Sending due task {job} "), lines))

    def marks(self, names: list[str]) -> dict[str | None, int]:
        """Return the index of the last line so far of supervisord's lines and of each beat's."""
        return {name: len(self.lines(name)) - 1 for name in [None, *names]}

    def wait_for(
        self,
        what: str,
        test: Callable[[str], bool],
        *,
        after: int,
        timeout_seconds: float,
        name: str | None = None,
    ) -> int:
        """Wait for the first line of ``name``'s lines past index ``after`` that passes ``test``.

        Returns the line's index.

        Raises:
            AssertionError: none within ``timeout_seconds``; the message carries the lines' tail.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            lines = self.lines(name)
            for index in range(after + 1, len(lines)):
                if test(lines[index]):
                    return index
            assert time.monotonic() < deadline, (
                f"{what}: not seen in {timeout_seconds}s:\n" + "\n".join(lines[-60:])
            )
            time.sleep(0.1)


@contextlib.contextmanager
def supervised_beats(run_dir: Path, names: list[str], **env: str) -> Iterator[SupervisedLog]:
    """Run one beat per name under supervisord; yield what they write; stop them."""
    path = run_dir / "supervisord.out"
    with path.open("ab") as out:
        supervisor = Supervisor(
            run_dir,
            [Program(name, BEAT_ARGV) for name in names],
            env={**os.environ, **env},
            out=out,
        )
        try:
            supervisor.start()
            yield SupervisedLog(path, supervisor)
        finally:
            supervisor.stop()


def test_beat_restarted_after_redis_is_emptied_schedules_the_sweep_again(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, redis_client: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    started = time.monotonic()
    with supervised_beats(tmp_path, ["beat"]) as log:
        sweep = log.said(f"Sending due task {SWEEP} ")
        log.wait_for("a first sweep", sweep, after=-1, timeout_seconds=60, name="beat")
        startup_seconds = time.monotonic() - started
        # Pending transactions whose messages the flush will delete: no worker runs yet.
        ids = [submit(client, service_headers, deposit_body(wallet_factory())).get_json()["id"]
               for _ in range(5)]  # fmt: skip
        marks = log.marks(["beat"])
        flushed = time.monotonic()
        redis_client.flushall()
        log.wait_for("beat exiting on its lost lock", lambda line: "exited: beat " in line,
                     after=marks[None], timeout_seconds=30)  # fmt: skip
        exit_seconds = time.monotonic() - flushed
        log.wait_for("beat spawned again", lambda line: "spawned: 'beat'" in line,
                     after=marks[None], timeout_seconds=30)  # fmt: skip
        spawned = time.monotonic()
        # The old beat printed "beat: Starting" before the flush, so this is the new one.
        starting_at = log.wait_for("the new beat starting", log.said("beat: Starting"),
                                   after=marks["beat"], timeout_seconds=60, name="beat")  # fmt: skip
        starting = time.monotonic()
        log.wait_for("a sweep sent by the new beat", sweep, after=starting_at,
                     timeout_seconds=60, name="beat")  # fmt: skip
        sent = time.monotonic()
        restart_startup_seconds = starting - spawned
        print(f"\nbeat: start-up {startup_seconds:.1f}s; after FLUSHALL exited in "
              f"{exit_seconds:.1f}s, sweeping again in {sent - flushed:.1f}s "
              f"({restart_startup_seconds:.1f}s of it the new process starting)")  # fmt: skip
        # How fast is printed, not asserted: a slow machine may only make this slower.
        # That it exits, is restarted and sweeps again is what the waits above show.
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
        for name in names:
            log.wait_for(f"{name} starting", log.said("beat: Starting"), after=-1,
                         timeout_seconds=60, name=name)  # fmt: skip
        wait_until("a first sweep", lambda: any(log.sends(SWEEP, log.lines(n)) for n in names))
        marks = log.marks(names)
        flushed = time.monotonic()
        redis_client.flushall()
        exited_at = log.wait_for("the active beat exiting on its lost lock",
                                 lambda line: "exited: beat-" in line, after=marks[None],
                                 timeout_seconds=30)  # fmt: skip
        exited = next(n for n in names if f"exited: {n} " in log.lines()[exited_at])
        # Settled: the exited beat runs again (it waits on the lock or holds it),
        # and a sweep was sent after the flush. Its "beat: Starting" past the mark
        # is the new process's: the old one printed it before the flush.
        log.wait_for(f"{exited} starting again", log.said("beat: Starting"),
                     after=marks[exited], timeout_seconds=60, name=exited)  # fmt: skip
        wait_until("a sweep after the flush",
                   lambda: any(log.sends(SWEEP, log.lines(n)[marks[n] + 1 :]) for n in names))  # fmt: skip
        before = log.marks(names)
        window_started = time.monotonic()

        def window(name: str) -> list[str]:
            return log.lines(name)[before[name] + 1 :]

        for job in INTERVALS:  # each job sent a few times since: the schedule is running
            wait_until(
                f"{job} sent three times after the flush",
                lambda job=job: sum(log.sends(job, window(n)) for n in names) >= 3,
            )
        window_seconds = time.monotonic() - window_started
        for job, interval_seconds in INTERVALS.items():
            counts = sorted(log.sends(job, window(name)) for name in names)
            assert counts[0] == 0, f"both beats scheduled {job} after the flush: {counts}"
            assert counts[1] <= window_seconds / interval_seconds + 3, (job, counts)
        # Nor did both schedule during the hand-over: one sweep per interval at most.
        elapsed_seconds = time.monotonic() - flushed
        total = sum(log.sends(SWEEP, log.lines(n)[marks[n] + 1 :]) for n in names)
        assert total <= elapsed_seconds / SWEEP_INTERVAL_SECONDS + 2, (total, elapsed_seconds)
