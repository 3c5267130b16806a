"""``transactions.wait`` on the API's long-poll: it returns once the transaction settles.

No worker runs here: the transaction stays pending until the test applies it
(``drain_stream``) once the client's long-poll is on its way, so the wait can
only end by the API's wake-up, not by its own timeout.
"""

from __future__ import annotations

from typing import Any

import pytest
from tally_client import Tally, WaitTimeoutError

from shared.wakeups import publish_settled
from tests.client.conftest import FLAVORS, Recorder, run_client, secret_of
from tests.helpers import ClientThreads, drain_stream

pytestmark = pytest.mark.pipeline

#: Far longer than the test can take: a wait that slept it out would hit the hang guard.
TIMEOUT_SECONDS = 3600.0


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_returns_the_settled_transaction_when_it_is_applied(
    flavor: str, api_url: str, tally: Tally, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    deposit = tally.transactions.deposit("4.00", "SGD", wallet_factory())
    recorder, threads, result = Recorder(), ClientThreads(), {}
    wait = lambda c: c.transactions.wait(deposit.id, TIMEOUT_SECONDS)  # noqa: E731
    threads.start(
        lambda: result.update(
            tx=run_client(flavor, api_url, secret_of(service_headers), wait, recorder=recorder)
        )
    )
    assert recorder.started.wait(120), "the client sent no long-poll"
    drain_stream(settled=publish_settled)  # announces what it settled, as the worker does
    threads.join(timeout_seconds=300)

    assert (result["tx"].id, result["tx"].status) == (deposit.id, "completed")
    # Each request asked the server to hold it, for at most the 30 s the API allows.
    waits = [float(request.url.params["wait"]) for request, _ in recorder.exchanges]
    assert waits and all(0 < w <= 30 for w in waits), waits


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_raises_with_the_pending_transaction_at_its_timeout(
    flavor: str, api_url: str, tally: Tally, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    deposit = tally.transactions.deposit("4.00", "SGD", wallet_factory())
    wait = lambda c: c.transactions.wait(deposit.id, 0.2)  # noqa: E731
    with pytest.raises(WaitTimeoutError) as timed_out:
        run_client(flavor, api_url, secret_of(service_headers), wait)
    assert (timed_out.value.transaction.id, timed_out.value.transaction.status) == (
        deposit.id,
        "pending",
    )
    drain_stream()
