"""What the load generator submits: one request body per call, drawn from a seeded RNG.

Every workload moves 0.01 SGD at a time between wallets the set-up created
and funded (``funding_amount``), so no transaction fails for want of funds
and every one the API accepts ends ``completed``:

- ``uniform``: transfers between two random wallets;
- ``hot_in``: transfers from a random wallet into wallet 0 (one lane credited by all);
- ``hot_out``: transfers from wallet 0 to a random wallet (one lane debited by all);
- ``few``: transfers between two random wallets of the first ``FEW_WALLETS``;
- ``mixed``: deposits, withdrawals, transfers and holds in the shares of ``MIXED_SHARES``;
- ``longpoll``: ``uniform`` submissions, while waiters long-poll the pending ones;
- ``bulk``: ``uniform`` transfers, ``BATCH_SIZES["bulk"]`` per request to
  ``POST /v1/transactions/batch``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

CURRENCY = "SGD"
AMOUNT = "0.01"
#: Every wallet's deposit: 100,000 debits of 0.01, far more than any run submits.
FUNDING_AMOUNT = "1000.00"
#: ``hot_out``'s wallet 0 pays every transfer: 10^9 of them.
HOT_FUNDING_AMOUNT = "10000000.00"

Body = dict[str, Any]
Builder = Callable[[random.Random, list[str]], Body]


def _pair(rng: random.Random, wallets: list[str]) -> tuple[str, str]:
    # Two distinct indices without building a sample: this runs per request.
    first = rng.randrange(len(wallets))
    second = rng.randrange(len(wallets) - 1)
    return wallets[first], wallets[second + (second >= first)]


def _transfer(source: str, destination: str) -> Body:
    return {"type": "transfer", "amount": AMOUNT, "currency": CURRENCY,
            "source_wallet_id": source, "destination_wallet_id": destination}  # fmt: skip


def _uniform(rng: random.Random, wallets: list[str]) -> Body:
    return _transfer(*_pair(rng, wallets))


#: ``few``'s wallets: a small set every transfer touches, the worst case for row locks.
FEW_WALLETS = 20


def _few(rng: random.Random, wallets: list[str]) -> Body:
    return _transfer(*_pair(rng, wallets[:FEW_WALLETS]))


def _hot_in(rng: random.Random, wallets: list[str]) -> Body:
    return _transfer(wallets[1 + rng.randrange(len(wallets) - 1)], wallets[0])


def _hot_out(rng: random.Random, wallets: list[str]) -> Body:
    return _transfer(wallets[0], wallets[1 + rng.randrange(len(wallets) - 1)])


def _deposit(rng: random.Random, wallets: list[str]) -> Body:
    return {"type": "deposit", "amount": AMOUNT, "currency": CURRENCY,
            "destination_wallet_id": rng.choice(wallets)}  # fmt: skip


def _withdrawal(rng: random.Random, wallets: list[str]) -> Body:
    return {"type": "withdrawal", "amount": AMOUNT, "currency": CURRENCY,
            "source_wallet_id": rng.choice(wallets)}  # fmt: skip


def _hold(rng: random.Random, wallets: list[str]) -> Body:
    return {"type": "hold", "amount": AMOUNT, "currency": CURRENCY,
            "source_wallet_id": rng.choice(wallets), "expires_in": 3600}  # fmt: skip


#: Request builders of ``mixed`` by transaction type.
MIXED_BUILDERS: dict[str, Builder] = {
    "deposit": _deposit,
    "withdrawal": _withdrawal,
    "transfer": _uniform,
    "hold": _hold,
}
#: ``mixed``'s shares by type. A hold stays held for the run (it expires in an
#: hour); the apply path's cost of a hold is what it measures.
MIXED_SHARES: dict[str, float] = {"deposit": 0.2, "withdrawal": 0.2, "transfer": 0.5, "hold": 0.1}


def _mixed(rng: random.Random, wallets: list[str]) -> Body:
    kinds = [kind for kind, share in MIXED_SHARES.items() if share > 0]
    kind = rng.choices(kinds, weights=[MIXED_SHARES[k] for k in kinds])[0]
    return MIXED_BUILDERS[kind](rng, wallets)


WORKLOADS: dict[str, Builder] = {
    "uniform": _uniform,
    "hot_in": _hot_in,
    "hot_out": _hot_out,
    "few": _few,
    "mixed": _mixed,
    "longpoll": _uniform,
    "bulk": _uniform,
}

#: Workloads that submit several transactions per request, to ``POST /v1/transactions/batch``.
BATCH_SIZES: dict[str, int] = {"bulk": 100}


def request_body(workload: str, rng: random.Random, wallets: list[str]) -> Body:
    """Return the JSON body of the next ``POST /v1/transactions`` of ``workload``.

    Args:
        workload: a key of ``WORKLOADS``.
        rng: the generator's seeded RNG.
        wallets: ids of the funded wallets, at least two; wallet 0 is the hot one.

    Raises:
        KeyError: an unknown workload.
    """
    return WORKLOADS[workload](rng, wallets)


def funding_amount(workload: str, index: int) -> str:
    """Return the deposit (decimal string, SGD) the set-up makes into wallet ``index``."""
    return HOT_FUNDING_AMOUNT if workload == "hot_out" and index == 0 else FUNDING_AMOUNT
