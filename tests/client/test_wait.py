"""``transactions.wait`` on the API's long-poll: it returns once the transaction settles.

No worker runs here: the transaction stays pending until the test applies it
(``drain_stream``) once the client's long-poll is on its way, so the wait can
only end by the API's wake-up, not by its own timeout.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from tally_client import Tally, WaitTimeoutError

from shared import db
from shared.services import scheduled
from shared.wakeups import publish_settled
from tests.client.conftest import FLAVORS, Recorder, run_client, secret_of
from tests.helpers import ClientThreads, drain_stream, wait_for

pytestmark = pytest.mark.pipeline

#: Far longer than the test can take: a wait that slept it out would hit the hang guard.
TIMEOUT_SECONDS = 3600.0


def _wait_in_thread(
    flavor: str, api_url: str, service_headers: dict[str, str], transaction_id: Any
) -> tuple[Recorder, ClientThreads, dict[str, Any]]:
    """Start ``transactions.wait(transaction_id)`` in a thread; ``result["tx"]`` is its answer."""
    recorder, threads = Recorder(), ClientThreads()
    result: dict[str, Any] = {}
    wait = lambda c: c.transactions.wait(transaction_id, TIMEOUT_SECONDS)  # noqa: E731
    threads.start(
        lambda: result.update(
            tx=run_client(flavor, api_url, secret_of(service_headers), wait, recorder=recorder)
        )
    )
    return recorder, threads, result


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_returns_the_settled_transaction_when_it_is_applied(
    flavor: str, api_url: str, tally: Tally, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    deposit = tally.transactions.deposit("4.00", "SGD", wallet_factory())
    recorder, threads, result = _wait_in_thread(flavor, api_url, service_headers, deposit.id)
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


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_pauses_on_a_scheduled_transaction_instead_of_asking_again_and_again(
    flavor: str, api_url: str, tally: Tally, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    deposit = tally.transactions.deposit("4.00", "SGD", wallet_factory(), scheduled_at=later)
    recorder = Recorder()
    wait = lambda c: c.transactions.wait(deposit.id, 0.5)  # noqa: E731
    with pytest.raises(WaitTimeoutError) as timed_out:
        run_client(flavor, api_url, secret_of(service_headers), wait, recorder=recorder)
    assert timed_out.value.transaction.status == "scheduled"
    # The long-poll answers a scheduled transaction at once: one read, a pause until the
    # timeout (its time is an hour away), at most one more read.
    assert 1 <= len(recorder.exchanges) <= 2, recorder.statuses()
    assert tally.transactions.cancel(deposit.id).status == "canceled"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_keeps_waiting_through_scheduled_until_the_transaction_is_applied(
    flavor: str, api_url: str, tally: Tally, service_headers: dict[str, str], wallet_factory: Any
) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    deposit = tally.transactions.deposit("4.00", "SGD", wallet_factory(), scheduled_at=soon)
    assert deposit.status == "scheduled"
    recorder, threads, result = _wait_in_thread(flavor, api_url, service_headers, deposit.id)
    assert recorder.answered.wait(120), "the client read nothing"

    def released() -> bool:  # beat's release job, run here once the time has come
        with db.transaction() as session:
            scheduled.release_due(session)
        return tally.transactions.get(deposit.id).status == "pending"

    wait_for(released, timeout_seconds=60, what="the scheduled deposit's release")
    drain_stream(settled=publish_settled)
    threads.join(timeout_seconds=300)
    assert (result["tx"].id, result["tx"].status) == (deposit.id, "completed")
    assert set(recorder.statuses()) == {200}
