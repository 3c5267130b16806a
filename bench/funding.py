"""Set-up of a benchmark: create its wallets and fund them over the HTTP API.

Set-up is not measured, but 10,000 wallets one request after another would
take minutes, so up to ``concurrency`` wallets are created and funded at once
(each wallet: ``POST /v1/wallets`` then its deposit), over keep-alive
connections. Transient failures (5xx, a dropped connection) are retried with
the same idempotency key, so a retry never makes a second deposit.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from bench.workloads import CURRENCY, funding_amount

ATTEMPTS = 5


async def _post(
    session: aiohttp.ClientSession, path: str, body: dict[str, Any], *,
    accepted: tuple[int, ...], headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    status = 0
    for attempt in range(ATTEMPTS):
        try:
            async with session.post(path, json=body, headers=headers) as response:
                status, payload = response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError):
            status, payload = 0, {}
        if status in accepted:
            return status, payload
        if 0 < status < 500:
            raise RuntimeError(f"POST {path}: {status} {payload}")
        await asyncio.sleep(0.2 * 2**attempt)
    raise RuntimeError(f"POST {path}: still failing after {ATTEMPTS} attempts (last {status})")


async def _wallet(session: aiohttp.ClientSession, owner_ref: str) -> str:
    status, payload = await _post(
        session, "/v1/wallets", {"owner_ref": owner_ref, "currency": CURRENCY}, accepted=(201, 409)
    )
    if status == 201:
        return str(payload["id"])
    # 409: an earlier attempt was created but its answer lost; find that wallet.
    async with session.get("/v1/wallets", params={"owner_ref": owner_ref}) as response:
        return str((await response.json())["data"][0]["id"])


async def _create_and_fund(
    url: str, service_key: str, *, workload: str, count: int, concurrency: int
) -> tuple[list[str], list[str]]:
    token = uuid.uuid4().hex[:12]  # owner refs unique to this invocation: a stack may be reused
    semaphore = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, index: int) -> tuple[str, str]:
        async with semaphore:
            wallet_id = await _wallet(session, f"bench-{token}-{index}")
            body = {"type": "deposit", "amount": funding_amount(workload, index),
                    "currency": CURRENCY, "destination_wallet_id": wallet_id}  # fmt: skip
            headers = {"Idempotency-Key": f"bench-{token}-fund-{index}"}
            # 200: a retried deposit whose first answer was lost, replayed by its key.
            _, deposit = await _post(
                session, "/v1/transactions", body, accepted=(202, 200), headers=headers
            )
            return wallet_id, str(deposit["id"])

    async with aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=60),
        headers={"Authorization": f"Bearer {service_key}"},
    ) as session:
        pairs = await asyncio.gather(*(one(session, index) for index in range(count)))
    return [wallet for wallet, _ in pairs], [deposit for _, deposit in pairs]


def create_funded_wallets(
    url: str, service_key: str, *, workload: str, count: int, concurrency: int = 64
) -> tuple[list[str], list[str]]:
    """Create ``count`` SGD wallets and submit one deposit into each.

    Returns:
        ``(wallet ids, deposit transaction ids)``, in wallet order; wallet 0 is
        the hot wallet of the ``hot_*`` workloads. The deposits may still be
        pending: wait for them before measuring.

    Raises:
        RuntimeError: a request was refused (a 4xx other than the replies to a
            retry whose first answer was lost) or kept failing after ``ATTEMPTS`` tries.
    """
    return asyncio.run(
        _create_and_fund(url, service_key, workload=workload, count=count, concurrency=concurrency)
    )
