"""One open-loop generator for Tally's API and the floor apps, so both are loaded the same way.

``python -m bench.floor.open_loop URL RATE SECONDS --key KEY --wallets FILE``
sends ``RATE`` transfers a second at fixed times for ``SECONDS`` seconds and
prints the latency percentiles, each measured from the request's scheduled
time (so a late generator counts against the server, as in ``tally bench
http --rate``). ``URL`` is the full address of the submission: Tally's
``http://127.0.0.1:8000/v1/transactions`` or a floor app's ``…/t``; the key is
the service key or ``floor-key``; the wallets, one id a line, are funded ones
(a floor app accepts any). Used for series 12 of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid

import aiohttp

from bench.measure import percentile
from bench.workloads import request_body


async def _load(url: str, rate: float, seconds: float, key: str, wallets: list[str]) -> None:
    latencies_ms: list[float] = []
    refused = 0
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        rng = random.Random(3)
        start = loop.time() + 0.2

        async def submit(scheduled: float) -> None:
            nonlocal refused
            body = request_body("uniform", rng, wallets)
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                refused += response.status != 202
            latencies_ms.append((loop.time() - scheduled) * 1000)

        tasks = []
        for index in range(int(rate * seconds)):
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            tasks.append(asyncio.create_task(submit(scheduled)))
        await asyncio.gather(*tasks)
    p50, p90, p99 = (percentile(latencies_ms, q) or 0.0 for q in (0.5, 0.9, 0.99))
    print(f"{url} at {rate:g}/s: p50 {p50:.1f} p90 {p90:.1f} p99 {p99:.1f} ms, {refused} not 202")


def main() -> None:
    """Parse the command line and run the load."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("rate", type=float, help="submissions per second")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--key", required=True, help="bearer token")
    parser.add_argument("--wallets", required=True, help="file of wallet ids, one a line")
    options = parser.parse_args()
    with open(options.wallets) as file:
        wallets = file.read().split()
    asyncio.run(_load(options.url, options.rate, options.seconds, options.key, wallets))


if __name__ == "__main__":
    main()
