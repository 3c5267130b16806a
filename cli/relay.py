"""Print the output of supervisord's programs with each line prefixed by its program's name.

supervisord writes a program's output to its ``stdout_logfile`` as it comes,
with no prefix (supervisord docs, "[program:x] Section Settings"). Pointing
that file at a FIFO read here lets ``tally up`` print ``worker   | ...`` lines
as honcho did, while supervisord's own log lines go straight to stdout.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO


class OutputRelay:
    """Copy each program's output to ``out``, every line prefixed with the program's name.

    One FIFO per program under ``fifo_dir``; supervisord opens it as the
    program's ``stdout_logfile``. The relay holds a writer of its own on each
    FIFO so that a reader never sees end-of-file between two spawns; :meth:`close`
    drops it, drains what is left and stops the thread.

    Args:
        fifo_dir: where the FIFOs are made (recreated on each start).
        names: the programs' names.
        out: a binary stream (``sys.stdout.buffer``).
    """

    def __init__(self, fifo_dir: Path, names: Iterable[str], out: BinaryIO) -> None:
        self.out = out
        self.paths: dict[str, Path] = {}
        self._readers: dict[int, str] = {}
        self._writers: list[int] = []
        self._width = 0
        self._thread: threading.Thread | None = None
        fifo_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            path = fifo_dir / f"{name}.fifo"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path, 0o600)
            # Non-blocking open of the read end first: a FIFO's write end cannot be
            # opened before a reader exists.
            self._readers[os.open(path, os.O_RDONLY | os.O_NONBLOCK)] = name
            self._writers.append(os.open(path, os.O_WRONLY))
            self.paths[name] = path
            self._width = max(self._width, len(name))

    def start(self) -> None:
        """Start relaying in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="output-relay", daemon=True)
        self._thread.start()

    def close(self, *, timeout_seconds: float = 5.0) -> None:
        """Stop relaying once what supervisord wrote is printed; close the FIFOs."""
        for fd in self._writers:
            os.close(fd)
        self._writers.clear()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        for fd in list(self._readers):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _emit(self, name: str, lines: list[bytes]) -> None:
        """Write ``lines`` with the program's prefix: one write and one flush per read, not per line.

        A write and a flush per line cost a system call each at a few hundred lines a second.
        """
        prefix = f"{name:<{self._width}} | ".encode()
        with contextlib.suppress(OSError, ValueError):
            self.out.write(b"".join(prefix + line.rstrip(b"\r\n") + b"\n" for line in lines))
            self.out.flush()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        pending: dict[int, bytes] = {}
        for fd in self._readers:
            selector.register(fd, selectors.EVENT_READ)
            pending[fd] = b""
        while selector.get_map():
            for key, _ in selector.select():
                fd = int(key.fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # closed by close() after its timeout
                    data = b""
                name = self._readers[fd]
                if not data:  # end of file: supervisord and our own writer are gone
                    selector.unregister(fd)
                    if pending[fd]:
                        self._emit(name, [pending[fd]])
                    continue
                *lines, pending[fd] = (pending[fd] + data).split(b"\n")
                if lines:
                    self._emit(name, lines)
        selector.close()
