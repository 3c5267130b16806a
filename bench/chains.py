"""``tally bench chains``: does money received get applied before money spent from it?

Chains of wallets: the first wallet of each chain receives a deposit of
``CHAIN_AMOUNT``, and the amount then hops to the next wallet of the chain,
each hop submitted right after the previous hop's ``202`` (so each hop is
accepted after the money it spends was accepted into its source). Several
chains run at once. In acceptance order every hop has its money; a processor
that applies out of order fails hops ``insufficient_funds``. A second round
stops the stack's workers (SIGSTOP) while the chains are submitted, as a GC
or VM pause would, so the whole round queues up before anything applies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from tally_client import Tally

from bench.measure import read_outcomes, wait_settled
from bench.stack import Stack, stack_processes_of

CHAIN_AMOUNT = "10.00"


@contextlib.contextmanager
def _paused(root: Path | None, seconds: float) -> Iterator[None]:
    """SIGSTOP the stack's apply workers now, and SIGCONT them ``seconds`` later (or on exit)."""
    if root is None or seconds <= 0:
        yield
        return
    workers = stack_processes_of(root, "worker")
    for process in workers:
        with contextlib.suppress(psutil.Error):
            os.kill(process.pid, signal.SIGSTOP)
    resumed = threading.Event()

    def resume() -> None:
        if resumed.is_set():
            return
        resumed.set()
        for process in workers:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)

    timer = threading.Timer(seconds, resume)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        resume()


def run_round(
    stack: Stack, *, chains: int, hops: int, parallel: int, pause_seconds: float = 0.0
) -> dict[str, Any]:
    """Run one round of ``chains`` chains of ``hops`` hops, ``parallel`` chains at a time.

    Returns:
        ``{"hops", "hops_completed", "failures": {code: n}, "chains", "chains_delivered",
        "pause_seconds"}``.

    Raises:
        RuntimeError: the API refused a request, or hops stayed pending for 5 minutes.
    """
    token = uuid.uuid4().hex[:10]
    with Tally(stack.url, stack.service_key, timeout=30) as tally:
        wallets = [
            [str(tally.wallets.create(f"chain-{token}-{c}-{h}", "SGD").id) for h in range(hops + 1)]
            for c in range(chains)
        ]
    hop_ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def chain_worker(chain: list[str]) -> None:
        try:
            with Tally(stack.url, stack.service_key, timeout=30) as tally:
                tally.transactions.deposit(CHAIN_AMOUNT, "SGD", chain[0])
                for source, destination in zip(chain, chain[1:], strict=False):
                    hop = tally.transactions.transfer(CHAIN_AMOUNT, "SGD", source, destination)
                    with lock:
                        hop_ids.append(str(hop.id))
        except BaseException as error:  # reported after the round
            errors.append(error)

    with _paused(stack.root, pause_seconds):
        for start in range(0, chains, parallel):
            threads = [
                threading.Thread(target=chain_worker, args=(chain,))
                for chain in wallets[start : start + parallel]
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    if errors:
        raise RuntimeError(f"a chain's request failed: {errors[0]}")
    if wait_settled(stack.database_url, hop_ids, timeout_seconds=300):
        raise RuntimeError("hops still pending after 5 minutes")
    outcomes = read_outcomes(stack.database_url, hop_ids)
    failures = _failure_codes(stack.database_url, hop_ids)
    completed = sum(1 for o in outcomes.values() if o.status == "completed")
    with Tally(stack.url, stack.service_key, timeout=30) as tally:
        delivered = sum(
            1 for chain in wallets if str(tally.wallets.get(chain[-1]).balance) == CHAIN_AMOUNT
        )
    return {
        "hops": len(hop_ids),
        "hops_completed": completed,
        "failures": dict(failures),
        "chains": chains,
        "chains_delivered": delivered,
        "pause_seconds": pause_seconds,
    }


def _failure_codes(database_url: str, ids: list[str]) -> Counter[str]:
    import psycopg

    from bench.baseline import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT failure_code FROM transactions WHERE id = ANY(%s) AND status = 'failed'",
            ([uuid.UUID(i) for i in ids],),
        ).fetchall()
    return Counter(str(row[0]) for row in rows)


def run_chains(
    stack: Stack, *, chains: int = 40, hops: int = 5, parallel: int = 8, pause_seconds: float = 5.0
) -> dict[str, Any]:
    """Run a round with the workers running, then one with them paused; return both.

    Returns:
        ``{"running": round, "paused": round}`` (:func:`run_round`); ``paused``
        is None for a stack given by URL, whose workers cannot be paused.
    """
    started = time.monotonic()
    running = run_round(stack, chains=chains, hops=hops, parallel=parallel)
    paused = None
    if stack.root is not None:
        paused = run_round(
            stack, chains=chains, hops=hops, parallel=parallel, pause_seconds=pause_seconds
        )
    return {"running": running, "paused": paused, "seconds": round(time.monotonic() - started, 1)}
