"""Set-up of a benchmark: create its wallets and fund them over the HTTP API, with the client.

Set-up is not measured, but 10,000 wallets one request after another would
take minutes, so up to ``concurrency`` wallets are created and funded at once
(each wallet: ``POST /v1/wallets`` then its deposit) through one
``tally_client.AsyncTally``. The client retries what is safe to retry
(docs/client.md, "Retries"): a deposit with its idempotency key, so a retry
never makes a second deposit; a wallet whose answer was lost comes back as
``409 wallet_exists`` and is looked up by its owner reference.
"""

from __future__ import annotations

import asyncio
import uuid

from tally_client import AsyncTally, ConflictError

from bench.workloads import CURRENCY, funding_amount

#: Tries of one request (the first and its retries) before the set-up gives up.
ATTEMPTS = 5


async def _wallet(tally: AsyncTally, owner_ref: str) -> str:
    """Create the wallet of ``owner_ref``, or find it if an earlier try created it."""
    try:
        return str((await tally.wallets.create(owner_ref, CURRENCY)).id)
    except ConflictError as error:
        if error.code != "wallet_exists":
            raise
        async for wallet in tally.wallets.list(owner_ref=owner_ref, limit=1):
            return str(wallet.id)
        raise


async def _create_and_fund(
    url: str, service_key: str, *, workload: str, count: int, concurrency: int
) -> tuple[list[str], list[str]]:
    token = uuid.uuid4().hex[:12]  # owner refs unique to this invocation: a stack may be reused
    semaphore = asyncio.Semaphore(concurrency)

    async def one(tally: AsyncTally, index: int) -> tuple[str, str]:
        async with semaphore:
            wallet_id = await _wallet(tally, f"bench-{token}-{index}")
            deposit = await tally.transactions.deposit(
                funding_amount(workload, index), CURRENCY, wallet_id,
                idempotency_key=f"bench-{token}-fund-{index}",
            )  # fmt: skip
            return wallet_id, str(deposit.id)

    async with AsyncTally(url, service_key, timeout=60, max_retries=ATTEMPTS - 1) as tally:
        pairs = await asyncio.gather(*(one(tally, index) for index in range(count)))
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
        tally_client.APIError: a request was refused, or kept failing through
            ``ATTEMPTS`` tries.
        tally_client.TallyConnectionError: no answer through ``ATTEMPTS`` tries.
    """
    return asyncio.run(
        _create_and_fund(url, service_key, workload=workload, count=count, concurrency=concurrency)
    )
