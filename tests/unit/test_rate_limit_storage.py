"""The rate limits' in-process storage under concurrent requests (api.limits.LockedMemoryStorage)."""

from __future__ import annotations

import contextlib
import threading

from limits.storage import MemoryStorage, storage_from_string

from api.limits import LockedMemoryStorage


def test_the_scheme_names_the_locked_storage() -> None:
    assert isinstance(storage_from_string("tally-memory://"), LockedMemoryStorage)


class _UnluckySchedule(LockedMemoryStorage):
    """Pause each thread right after it stores a new expiry timer, until a rival has stored one too.

    That is the schedule that breaks limits' own storage: thread A stores its
    timer, B finds A's not yet started and stores its own, then both start B's.
    Under the lock the rival never comes, and the pause ends after its timeout.
    """

    rival: threading.Barrier | None = None

    @property  # type: ignore[override]
    def timer(self) -> threading.Timer:
        return self.__dict__["_timer"]  # type: ignore[no-any-return]

    @timer.setter
    def timer(self, value: threading.Timer) -> None:
        self.__dict__["_timer"] = value
        if self.rival is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.rival.wait()


def _count_twice_at_once(storage: MemoryStorage) -> list[BaseException]:
    errors: list[BaseException] = []

    def count() -> None:
        try:
            storage.incr("key", expiry=60)
        except BaseException as error:  # the race's RuntimeError, reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=count) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_threads_never_start_one_expiry_timer_twice() -> None:
    storage = _UnluckySchedule()
    storage.timer.join()  # the first timer has run: the next count restarts it
    storage.rival = threading.Barrier(2, timeout=0.5)
    assert _count_twice_at_once(storage) == []
    assert storage.get("key") == 2
