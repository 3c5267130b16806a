"""Acceptance order (invariant 6, docs/architecture.md) through the pipeline: HTTP, Redis, a real worker."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.helpers import (
    assert_ledger_consistent,
    balance_minor,
    deposit_body,
    submit,
    transfer_body,
    wait_terminal,
)

pytestmark = pytest.mark.pipeline


def test_ten_withdrawals_after_a_deposit_apply_in_acceptance_order(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any
) -> None:
    wallet_id = str(wallet_factory())
    deposit = submit(
        client,
        service_headers,
        {
            "type": "deposit",
            "amount": "100.00",
            "currency": "SGD",
            "destination_wallet_id": wallet_id,
        },
    ).get_json()
    wait_terminal([deposit["id"]], context=worker.log())
    withdrawals = []
    for _ in range(10):  # one after another: each is accepted before the next is sent
        response = submit(
            client,
            service_headers,
            {
                "type": "withdrawal",
                "amount": "15.00",
                "currency": "SGD",
                "source_wallet_id": wallet_id,
            },
        )
        assert response.status_code == 202
        withdrawals.append(response.get_json()["id"])
    result = wait_terminal(withdrawals, context=worker.log())
    assert [result[w]["status"] for w in withdrawals] == ["completed"] * 6 + ["failed"] * 4
    assert {result[w]["failure_code"] for w in withdrawals[6:]} == {"insufficient_funds"}
    wallet = client.get(f"/v1/wallets/{wallet_id}", headers=service_headers).get_json()
    assert wallet["balance"] == "10.00"
    polled = client.get(
        f"/v1/transactions/{withdrawals[-1]}?wait=5", headers=service_headers
    ).get_json()
    assert polled["failure_code"] == "insufficient_funds" and polled["completed_at"]
    assert_ledger_consistent()


@contextlib.contextmanager
def paused(worker: Any) -> Iterator[None]:
    """Stop the worker's processes (SIGSTOP) for the block, as a GC or VM pause would."""
    processes = [psutil.Process(worker.process.pid), *psutil.Process(worker.process.pid).children()]
    for process in processes:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)


def run_chains(
    client: Any, headers: dict[str, str], wallet_factory: Any, *, chains: int, hops: int
) -> tuple[list[list[Any]], list[str]]:
    """Fund the first wallet of each chain, then send its 10.00 hop by hop, eight chains at once.

    Each hop is submitted right after the previous hop's 202: in acceptance
    order every hop has its money. Returns the chains' wallets and every hop's id.
    """
    wallets = [[wallet_factory() for _ in range(hops + 1)] for _ in range(chains)]
    funding = [submit(client, headers, deposit_body(chain[0], "10.00")) for chain in wallets]
    assert {r.status_code for r in funding} == {202}
    hop_ids: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def one_chain(chain: list[Any]) -> None:
        try:
            for source, destination in zip(chain, chain[1:], strict=False):
                response = submit(client, headers, transfer_body(source, destination, "10.00"))
                assert response.status_code == 202, response.get_json()
                with lock:
                    hop_ids.append(response.get_json()["id"])
        except BaseException as error:  # raised in the test's thread below
            failures.append(error)

    for start in range(0, chains, 8):
        threads = [
            threading.Thread(target=one_chain, args=(c,)) for c in wallets[start : start + 8]
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return wallets, hop_ids


@pytest.mark.parametrize("pause", [False, True], ids=["running", "paused"])
def test_money_sent_along_chains_of_wallets_is_always_delivered(
    client: Any, service_headers: dict[str, str], wallet_factory: Any, worker: Any, pause: bool
) -> None:
    """Each hop spends money the previous hop brought: applied in acceptance order, none fails."""
    with paused(worker) if pause else contextlib.nullcontext():
        wallets, hop_ids = run_chains(client, service_headers, wallet_factory, chains=16, hops=5)
    result = wait_terminal(hop_ids, context=worker.log())
    failed = {i: r["failure_code"] for i, r in result.items() if r["status"] != "completed"}
    assert failed == {}
    for chain in wallets:
        assert [balance_minor(w) for w in chain] == [0] * (len(chain) - 1) + [1_000]
    assert_ledger_consistent()
