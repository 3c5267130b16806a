"""The load generator: an asyncio HTTP client in a process of its own.

It runs apart from the benchmark's other work (set-up, database reads, the
progress bar) so its CPU time is its own: ``cpu_seconds / wall_seconds`` near
1.0 means its one thread was saturated and the client, not the stack, may
have set the pace. Connections are kept alive (aiohttp's pool), as a real
client's would be.

Closed loop: ``connections`` tasks each submit back to back. Open loop:
submissions start at fixed times ``start + i / rate`` whether or not earlier
ones have answered, and latency counts from the scheduled time, so a stalled
server shows as latency instead of silently slowing the client down
(coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import resource
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from bench.workloads import BATCH_SIZES, request_body

#: Seconds between two ``GET /healthz`` of the probe that runs beside every load.
HEALTH_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True)
class LoadPlan:
    """Describe what one measured run submits, for how long, and how.

    ``rate_per_second`` None is a closed loop of ``connections`` clients; a number
    is an open loop of that many submissions per second over at most
    ``connections`` keep-alive connections. ``waiters`` > 0 adds that many
    clients long-polling (``?wait=wait_seconds``) transactions still pending.
    ``timeout_seconds`` bounds every request (plus ``wait_seconds`` for a wait).
    """

    url: str
    service_key: str
    workload: str
    wallets: list[str]
    duration_seconds: float
    connections: int
    rate_per_second: float | None = None
    waiters: int = 0
    wait_seconds: int = 30
    timeout_seconds: float = 30.0
    seed: int = 0


@dataclass
class LoadResult:
    """Hold what a run observed on the client's side; timestamps are Unix seconds (wall clock).

    ``errors`` counts failed requests by ``"<request>:<kind>"``, request one of
    ``submit``, ``wait``, ``health`` and kind ``http_<status>``, ``connection`` or
    ``timeout``. ``waits`` holds ``(transaction id, sent_at, answered_at, status)``.
    """

    started_at: float = 0.0
    submit_window_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    submitted: int = 0
    accepted_ids: list[str] = field(default_factory=list)
    intake_latencies_seconds: list[float] = field(default_factory=list)
    schedule_lags_seconds: list[float] = field(default_factory=list)
    health_latencies_seconds: list[float] = field(default_factory=list)
    waits: list[tuple[str, float, float, str]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


class _Generator:
    def __init__(self, plan: LoadPlan, progress: Any) -> None:
        self.plan = plan
        self.progress = progress
        self.result = LoadResult()
        self.loop = asyncio.get_running_loop()
        # One random prefix per process and a counter: unique keys without a uuid4 per request.
        self.key_prefix = f"bench-{uuid.uuid4().hex}"
        self.counter = itertools.count()
        self.pending: asyncio.LifoQueue[str] = asyncio.LifoQueue()
        self.end = 0.0
        self.last_submit_done = 0.0

    def _error(self, request: str, kind: str) -> None:
        name = f"{request}:{kind}"
        self.result.errors[name] = self.result.errors.get(name, 0) + 1

    async def submit(
        self, session: aiohttp.ClientSession, rng: random.Random, scheduled: float | None
    ) -> None:
        started = self.loop.time()
        if scheduled is not None:
            self.result.schedule_lags_seconds.append(started - scheduled)
            started = scheduled
        path, body, headers, expected, size = self._request(rng)
        self.result.submitted += size
        accepted: list[str] = []
        try:
            async with session.post(path, json=body, headers=headers) as response:
                if response.status != expected:
                    await response.read()  # read, so that the connection is reused
                    self._error("submit", f"http_{response.status}")
                    return
                if expected == 202:
                    await response.read()
                    # The id from the Location header: no JSON parse on the client's hot path.
                    accepted.append(response.headers["Location"].rsplit("/", 1)[-1])
                else:
                    for item in (await response.json())["data"]:
                        if item["status"] == 202:
                            accepted.append(item["transaction"]["id"])
                        else:
                            self._error("submit", f"item_{item['status']}")
        except TimeoutError:
            self._error("submit", "timeout")
            return
        except (aiohttp.ClientError, OSError):
            self._error("submit", "connection")
            # Without a pause, a closed loop facing a refused port spins and floods the counts.
            await asyncio.sleep(0.01)
            return
        finally:
            self.last_submit_done = self.loop.time()
        self.result.intake_latencies_seconds.append(self.loop.time() - started)
        self.result.accepted_ids.extend(accepted)
        self.progress.value += len(accepted)
        if self.plan.waiters:
            for transaction_id in accepted:
                self.pending.put_nowait(transaction_id)

    def _request(
        self, rng: random.Random
    ) -> tuple[str, dict[str, Any], dict[str, str] | None, int, int]:
        """Return the next request: path, JSON body, headers, the status that accepts it, items."""
        size = BATCH_SIZES.get(self.plan.workload)
        if size is None:
            body = request_body(self.plan.workload, rng, self.plan.wallets)
            headers = {"Idempotency-Key": f"{self.key_prefix}-{next(self.counter)}"}
            return "/v1/transactions", body, headers, 202, 1
        items = [
            {
                **request_body(self.plan.workload, rng, self.plan.wallets),
                "idempotency_key": f"{self.key_prefix}-{next(self.counter)}",
            }
            for _ in range(size)
        ]
        return "/v1/transactions/batch", {"transactions": items}, None, 200, size

    async def closed_loop(self, session: aiohttp.ClientSession) -> None:
        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while self.loop.time() < self.end:
                await self.submit(session, rng, None)

        seeds = [self.plan.seed * 100_003 + index for index in range(self.plan.connections)]
        await asyncio.gather(*(client(seed) for seed in seeds))

    async def open_loop(self, session: aiohttp.ClientSession, start: float) -> None:
        assert self.plan.rate_per_second is not None
        rng, interval_seconds = random.Random(self.plan.seed), 1.0 / self.plan.rate_per_second
        tasks: set[asyncio.Task[None]] = set()
        for index in itertools.count():
            scheduled = start + index * interval_seconds
            if scheduled >= self.end:
                break
            # Sleep until the slot; when behind, still yield so started requests progress.
            await asyncio.sleep(max(0.0, scheduled - self.loop.time()))
            task = asyncio.create_task(self.submit(session, rng, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def waiter(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=self.plan.wait_seconds + self.plan.timeout_seconds)
        while (remaining := self.end - self.loop.time()) > 0:
            try:
                transaction_id = await asyncio.wait_for(self.pending.get(), remaining)
            except TimeoutError:
                return
            sent_at = time.time()
            path = f"/v1/transactions/{transaction_id}?wait={self.plan.wait_seconds}"
            try:
                async with session.get(path, timeout=timeout) as response:
                    payload = await response.json() if response.status == 200 else None
                    if payload is None:
                        await response.read()
                        self._error("wait", f"http_{response.status}")
                        continue
            except TimeoutError:
                self._error("wait", "timeout")
                continue
            except (aiohttp.ClientError, OSError):
                self._error("wait", "connection")
                await asyncio.sleep(0.01)
                continue
            self.result.waits.append((transaction_id, sent_at, time.time(), payload["status"]))

    async def health_probe(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = self.loop.time()
            try:
                async with session.get("/healthz") as response:
                    await response.read()
                    if response.status == 200:
                        self.result.health_latencies_seconds.append(self.loop.time() - started)
                    else:
                        self._error("health", f"http_{response.status}")
            except TimeoutError:
                self._error("health", "timeout")
            except (aiohttp.ClientError, OSError):
                self._error("health", "connection")
            delay = HEALTH_INTERVAL_SECONDS - (self.loop.time() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, delay))


def _session(plan: LoadPlan, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=plan.url,
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=plan.timeout_seconds),
        headers={"Authorization": f"Bearer {plan.service_key}"},
    )


async def _warm(session: aiohttp.ClientSession, connections: int) -> None:
    # Open the pool's connections before the clock starts: the first requests of a
    # run should not pay TCP set-up that a long-lived client pays once.
    async def touch() -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get("/healthz") as response:
                await response.read()

    await asyncio.gather(*(touch() for _ in range(connections)))


async def _generate(plan: LoadPlan, progress: Any, started: Any) -> LoadResult:
    generator = _Generator(plan, progress)
    loop, me = generator.loop, psutil.Process()
    async with (
        _session(plan, plan.connections) as submit_session,
        _session(plan, max(1, plan.waiters)) as wait_session,
        _session(plan, 1) as health_session,
    ):
        await _warm(submit_session, plan.connections)
        await _warm(wait_session, plan.waiters)
        stop = asyncio.Event()
        cpu_before, wall_before = me.cpu_times(), time.time()
        start = loop.time()
        generator.end = start + plan.duration_seconds
        generator.result.started_at = wall_before
        started.set()
        probe = asyncio.create_task(generator.health_probe(health_session, stop))
        waiters = [asyncio.create_task(generator.waiter(wait_session)) for _ in range(plan.waiters)]
        if plan.rate_per_second is None:
            await generator.closed_loop(submit_session)
        else:
            await generator.open_loop(submit_session, start)
        generator.result.submit_window_seconds = generator.last_submit_done - start
        await asyncio.gather(*waiters)
        stop.set()
        await probe
        cpu_after = me.cpu_times()
        generator.result.wall_seconds = time.time() - wall_before
        generator.result.cpu_seconds = (cpu_after.user - cpu_before.user) + (
            cpu_after.system - cpu_before.system
        )
    return generator.result


def generate(plan: LoadPlan, progress: Any, started: Any, results: Any) -> None:
    """Run ``plan`` in this process and put ``("ok", LoadResult)`` on ``results``.

    Meant as a ``multiprocessing`` target. ``progress`` is a shared integer
    (``multiprocessing.Value``) counting accepted submissions as they come and
    ``started`` an event set when the measured phase begins, both for the
    parent's progress bar. Any failure is put as ``("error", traceback text)``.
    """
    # Each waiter holds a socket: lift the soft descriptor limit to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        results.put(("ok", asyncio.run(_generate(plan, progress, started))))
    except BaseException:
        results.put(("error", traceback.format_exc()))
