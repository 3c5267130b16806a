"""A supervisord event listener that kills what a dead program left behind.

supervisord starts each program in a process group of its own (its pid is the
group id) and, on a stop, can signal the whole group (``killasgroup``); when a
program's main process dies on its own, though, supervisord only restarts it
and leaves any children of the dead process running. Some servers' children
notice and exit (celery's pool processes, gunicorn's workers, PostgreSQL's
backends); others do not: uvicorn's worker processes keep serving, keep the
listening socket, and so keep the restarted server from binding its port.

This listener gets ``PROCESS_STATE_EXITED`` (payload ``processname:web
groupname:web from_state:RUNNING expected:0 pid:123``) and SIGKILLs process
group ``pid``: what is left of the program that exited, and nothing else.
supervisord's event listener protocol: supervisord docs, "Events".

Run by supervisord as ``python -m cli.reaper`` (cli/supervise.py); stdout is the
protocol channel, so it reports on stderr.
"""

from __future__ import annotations

import os
import signal
import sys


def reap(payload: str) -> str | None:
    """SIGKILL the process group of the exited program described by ``payload``.

    Args:
        payload: a ``PROCESS_STATE_EXITED`` payload, ``key:value`` pairs.

    Returns:
        A line saying what was killed, or None when the group was already empty.
    """
    fields = dict(token.split(":", 1) for token in payload.split())
    pid = int(fields["pid"])
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return None
    return f"killed what was left of {fields['processname']} (process group {pid})"


def main() -> None:
    """Answer supervisord's events forever: reap after each exit, acknowledge every event."""
    from supervisor import childutils

    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers.get("eventname") == "PROCESS_STATE_EXITED":
            message = reap(payload)
            if message is not None:
                print(message, file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
