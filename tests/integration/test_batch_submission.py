"""``POST /v1/transactions/batch``: many transactions in one request and one commit, judged one by one."""

from __future__ import annotations

import io
import json
import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from shared import db
from shared.ledger.states import TransactionType
from shared.services import intake
from shared.services.intake import BatchItem, TransactionRequest, record_transactions
from tests.helpers import count_keys, deposit_body, submit, transaction_rows, transfer_body

BATCH = "/v1/transactions/batch"


def post_batch(client: Any, headers: dict[str, str], items: list[Any]) -> Any:
    """POST ``items`` as a batch; return the response."""
    return client.post(BATCH, json={"transactions": items}, headers=headers)


def keyed(body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """Return ``body`` as a batch item with a fresh (or the given) idempotency key."""
    return {**body, "idempotency_key": key or str(uuid.uuid4())}


def results_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    return response.get_json()["data"]


def deposit(wallet_id: uuid.UUID) -> TransactionRequest:
    """Return a validated deposit of 1.00 SGD into ``wallet_id``."""
    return TransactionRequest(TransactionType.DEPOSIT, 100, "SGD", None, wallet_id)


def group_body(a: Any, b: Any, c: Any) -> dict[str, Any]:
    return {"type": "group", "legs": [
        {"source_wallet_id": str(a), "destination_wallet_id": str(b), "amount": "1.00", "currency": "SGD"},
        {"source_wallet_id": str(a), "destination_wallet_id": str(c), "amount": "0.50", "currency": "SGD"},
    ]}  # fmt: skip


def hold_body(a: Any) -> dict[str, Any]:
    return {"type": "hold", "amount": "2.00", "currency": "SGD", "source_wallet_id": str(a)}


def test_each_item_gets_the_answer_the_single_call_gives(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    a, b, c, yen = wallet_factory(), wallet_factory(), wallet_factory(), wallet_factory("JPY")
    missing = uuid.uuid4()
    refused_bodies = [
        deposit_body(missing),  # 404 wallet_not_found
        deposit_body(yen, "5", "SGD"),  # 422 currency_mismatch
        deposit_body(a, "1.005"),  # 422 validation_failed, amount
        transfer_body(a, a, "1"),  # 422 validation_failed
        deposit_body(a, "5", "CHF"),  # 422 currency_not_enabled
        group_body(a, b, missing),  # 404 wallet_not_found, in a group
        {**deposit_body(a), "description": "a\x00b"},  # 422: PostgreSQL text cannot hold NUL
        {**deposit_body(a), "destination_walet_id": str(b)},  # 422 unknown field
        {**deposit_body(a), "metadata": {"k": json.loads("[" * 16 + "]" * 16)}},  # 400 too deep
    ]
    items = [
        keyed(deposit_body(a, "10.00")),
        *[keyed(body) for body in refused_bodies],
        keyed(group_body(a, b, c)),
        keyed(hold_body(a)),
        deposit_body(a),  # no idempotency_key
        keyed(deposit_body(a), "has space"),
        {**deposit_body(a), "idempotency_key": ""},
        {**deposit_body(a), "idempotency_key": 42},
        "not an object",
        keyed(transfer_body(a, b, "3.00")),
    ]
    results = results_of(post_batch(client, service_headers, items))
    assert len(results) == len(items)
    assert [r["status"] for r in results] == [
        202, 404, 422, 422, 422, 422, 404, 422, 422, 400, 202, 202, 400, 400, 400, 400, 400, 202,
    ]  # fmt: skip
    codes = [r["problem"]["code"] for r in results if "problem" in r]
    assert codes == [
        "wallet_not_found", "currency_mismatch", "validation_failed", "validation_failed",
        "currency_not_enabled", "wallet_not_found", "validation_failed", "validation_failed",
        "malformed_request", "idempotency_key_missing", "idempotency_key_invalid", "idempotency_key_missing",
        "idempotency_key_invalid", "malformed_request",
    ]  # fmt: skip
    for result in results:
        assert result["problem"]["status"] == result["status"] if "problem" in result else True
    # A refused item's problem is the single call's, field for field.
    for body, result in zip(refused_bodies, results[1 : 1 + len(refused_bodies)], strict=True):
        single = submit(client, service_headers, body)
        assert single.status_code == result["status"]
        assert single.get_json() == result["problem"], body
    accepted = [r["transaction"] for r in results if r["status"] == 202]
    assert [t["type"] for t in accepted] == ["deposit", "group", "hold", "transfer"]
    assert all(t["status"] == "pending" for t in accepted)
    assert accepted[0]["amount"] == "10.00" and accepted[0]["destination_wallet_id"] == str(a)
    assert accepted[2]["expires_at"] is not None
    # Each accepted item is the transaction a read returns.
    for transaction in accepted:
        read = client.get(f"/v1/transactions/{transaction['id']}", headers=service_headers)
        assert read.get_json() == transaction


def test_a_key_seen_earlier_in_the_batch_or_before_replays(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    a = wallet_factory()
    key, other = f"batch-{uuid.uuid4()}", f"batch-{uuid.uuid4()}"
    items = [
        keyed(deposit_body(a, "10.00"), key),
        keyed(deposit_body(a, "10.0"), key),  # the same request, written differently
        keyed(deposit_body(a, "11.00"), key),  # another request under the key
        keyed(deposit_body(a, "12.00"), other),
    ]
    first = results_of(post_batch(client, service_headers, items))
    assert [r["status"] for r in first] == [202, 200, 422, 202]
    assert first[1] == {"status": 200, "replayed": True, "transaction": first[0]["transaction"]}
    assert first[2]["problem"]["code"] == "idempotency_key_reused"
    again = results_of(post_batch(client, service_headers, items))
    assert [r["status"] for r in again] == [200, 200, 422, 200]
    assert again[0]["replayed"] is True
    assert again[0]["transaction"]["id"] == first[0]["transaction"]["id"]
    assert again[3]["transaction"]["id"] == first[3]["transaction"]["id"]
    # Keys share one space per API key with POST /v1/transactions, both ways.
    single = submit(client, service_headers, deposit_body(a, "12.00"), other)
    assert single.status_code == 200 and single.get_json()["id"] == first[3]["transaction"]["id"]
    third = f"batch-{uuid.uuid4()}"
    created = submit(client, service_headers, deposit_body(a, "13.00"), third).get_json()
    [replayed, reused] = results_of(
        post_batch(client, service_headers, [keyed(deposit_body(a, "13.00"), third),
                                             keyed(deposit_body(a, "14.00"), third)])
    )  # fmt: skip
    assert replayed["status"] == 200 and replayed["transaction"]["id"] == created["id"]
    assert reused["status"] == 422 and reused["problem"]["code"] == "idempotency_key_reused"
    assert count_keys([key, other, third]) == 3


def test_a_refused_item_leaves_its_key_to_a_later_item(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    a, key, group_key = wallet_factory(), f"free-{uuid.uuid4()}", f"free-{uuid.uuid4()}"
    b, c = wallet_factory(), wallet_factory()
    items = [
        keyed(deposit_body(uuid.uuid4()), key),  # refused by the database's check
        keyed(deposit_body(a, "1.001"), key),  # refused by the schema
        keyed(deposit_body(a, "5.00"), key),
        keyed(group_body(a, b, uuid.uuid4()), group_key),
        keyed(group_body(a, b, c), group_key),
    ]
    results = results_of(post_batch(client, service_headers, items))
    assert [r["status"] for r in results] == [404, 422, 202, 404, 202]
    assert count_keys([key, group_key]) == 2


def test_items_are_accepted_in_their_order(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    wallets = [wallet_factory() for _ in range(12)]
    rng = random.Random(7)
    items = []
    for index in range(120):
        a, b, c = rng.sample(wallets, 3)
        kind = index % 6
        body = (
            deposit_body(a, "5.00") if kind == 0
            else transfer_body(a, b, "1.00") if kind == 1
            else group_body(a, b, c) if kind == 2
            else hold_body(a) if kind == 3
            else deposit_body(uuid.uuid4()) if kind == 4  # refused: no gap in the order
            else {"type": "withdrawal", "amount": "1.00", "currency": "SGD", "source_wallet_id": str(a)}
        )  # fmt: skip
        items.append(keyed(body))
    results = results_of(post_batch(client, service_headers, items))
    ids = [r["transaction"]["id"] for r in results if r["status"] == 202]
    assert len(ids) == 100
    found = transaction_rows(ids)
    sequences = [found[i]["lane_sequence"] for i in ids]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_text_outside_ascii_is_recorded_exactly(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    # Items reach the database as one JSON document written without ASCII
    # escapes: what the client sent is what the row and the answers hold.
    description = 'Caf\u00e9 \u6771\u4eac \u2713 \U0001f4b8 \u2028 "quoted" \\ back'
    metadata = {"n\u00f8te": "na\u00efve \u2013 \u00fc", "emoji": "\U0001f600"}
    body = {**deposit_body(wallet_factory()), "description": description, "metadata": metadata}
    single = submit(client, service_headers, body)
    [item] = results_of(post_batch(client, service_headers, [keyed(body)]))
    for answer in (single.get_json(), item["transaction"]):
        assert (answer["description"], answer["metadata"]) == (description, metadata)
        read = client.get(f"/v1/transactions/{answer['id']}", headers=service_headers)
        assert (read.get_json()["description"], read.get_json()["metadata"]) == (
            description,
            metadata,
        )


def test_a_thousand_items_in_one_commit(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    wallets = [wallet_factory() for _ in range(40)]
    rng = random.Random(11)
    # Shuffled wallets: the order of the items is not the order of their wallets' ids.
    items = [keyed(deposit_body(rng.choice(wallets), f"{i % 97 + 1}.00")) for i in range(1000)]
    response = post_batch(client, service_headers, items)
    results = results_of(response)
    assert [r["status"] for r in results] == [202] * 1000
    ids = [r["transaction"]["id"] for r in results]
    found = transaction_rows(ids)
    assert len(found) == 1000
    sequences = [found[i]["lane_sequence"] for i in ids]
    assert sequences == sorted(sequences)
    # One database transaction recorded them all: every row carries its transaction id.
    assert len({found[i]["xmin"] for i in ids}) == 1
    assert [r["transaction"]["amount"] for r in results[:3]] == ["1.00", "2.00", "3.00"]


def test_more_than_a_thousand_items_is_refused_whole(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    a = wallet_factory()
    keys = [str(uuid.uuid4()) for _ in range(1001)]
    response = post_batch(client, service_headers, [keyed(deposit_body(a), k) for k in keys])
    assert response.status_code == 422 and response.content_type == "application/problem+json"
    problem = response.get_json()
    assert (
        problem["code"] == "validation_failed" and problem["errors"][0]["field"] == "transactions"
    )
    assert count_keys(keys) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "validation_failed"),
        ({"transactions": []}, 422, "validation_failed"),
        ({"transactions": {}}, 422, "validation_failed"),
        ({"transactions": [], "note": "x"}, 422, "validation_failed"),
        ([], 400, "malformed_request"),
    ],
)
def test_a_batch_without_its_list_is_refused_whole(
    client: Any, service_headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    response = client.post(BATCH, json=body, headers=service_headers)
    assert response.status_code == status and response.get_json()["code"] == code


def test_whole_request_problems(client: Any, service_headers: dict[str, str]) -> None:
    unauthenticated = client.post(BATCH, json={"transactions": [keyed(deposit_body(uuid.uuid4()))]})
    assert unauthenticated.status_code == 401
    not_json = client.post(
        BATCH, data=b"{nope", headers={**service_headers, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.get_json()["code"] == "malformed_request"


def test_a_batch_body_may_be_a_mebibyte_and_no_more(
    client: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    a = wallet_factory()
    # Over the 64 KiB of every other call: 400 items with long descriptions.
    items = [keyed({**deposit_body(a), "description": "d" * 200}) for _ in range(400)]
    body = json.dumps({"transactions": items}).encode()
    assert 64 * 1024 < len(body) < 1024 * 1024
    headers = {**service_headers, "Content-Type": "application/json"}
    assert [r["status"] for r in results_of(client.post(BATCH, data=body, headers=headers))] == [
        202
    ] * 400
    at_limit = body + b" " * (1024 * 1024 - len(body))
    assert client.post(BATCH, data=at_limit, headers=headers).status_code == 200
    keys = [str(uuid.uuid4()) for _ in range(1000)]
    items = [keyed({**deposit_body(a), "description": "d" * 500}, k) for k in keys]
    document = json.dumps({"transactions": items}).encode()
    over = document + b" " * (1024 * 1024 + 1 - len(document))
    response = client.post(BATCH, data=over, headers=headers)
    assert response.status_code == 413 and response.get_json()["code"] == "payload_too_large"
    chunked = client.post(
        BATCH,
        input_stream=io.BytesIO(over),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 413 and chunked.get_json()["code"] == "payload_too_large"
    assert count_keys(keys) == 0


def test_concurrent_identical_batches_record_each_transaction_once(
    app: Any, service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID]
) -> None:
    wallets = [wallet_factory() for _ in range(5)]
    items = [keyed(deposit_body(wallets[i % 5], "1.00")) for i in range(50)]
    items.insert(10, keyed(group_body(*wallets[:3])))
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    answers: list[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def one() -> None:
        client = app.test_client()
        barrier.wait()
        results = results_of(post_batch(client, service_headers, items))
        with lock:
            answers.append(results)

    threads = [threading.Thread(target=one) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == threads_count
    for index in range(len(items)):
        column = [answer[index] for answer in answers]
        assert len({r["transaction"]["id"] for r in column}) == 1, index
        assert sorted(r["status"] for r in column) == [200] * (threads_count - 1) + [202]
    assert count_keys([item["idempotency_key"] for item in items]) == len(items)


def test_the_rate_limit_counts_items(wallet_factory: Callable[..., uuid.UUID]) -> None:
    from api import create_app
    from shared.services.api_keys import Role, create_api_key

    client = create_app(
        {
            "TESTING": True,
            "TALLY_RATE_LIMITS": {"service": "5/hour", "ops": "5/hour"},
            "TALLY_RATE_LIMIT_PROCESSES": 1,
        }
    ).test_client()
    with db.transaction() as session:
        _, secret = create_api_key(session, role=Role.SERVICE, name="batch limit")
    headers = {"Authorization": f"Bearer {secret}"}
    a = wallet_factory()
    first = post_batch(client, headers, [keyed(deposit_body(a)) for _ in range(3)])
    assert first.status_code == 200 and first.headers["RateLimit-Remaining"] == "2"
    second = post_batch(client, headers, [keyed(deposit_body(a)) for _ in range(3)])
    assert second.status_code == 429 and second.get_json()["code"] == "rate_limited"
    # A body that cannot be read counts one, and answers as the edge says.
    unreadable = client.post(
        BATCH, data=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert unreadable.status_code in (400, 429)


def drains_queued(redis_client: Any) -> int:
    """Return how many drain messages wait in the ``tally`` queue, once the signals are sent."""
    import broker

    assert broker.drain_signaller.flush()
    queued = redis_client.lrange(broker.QUEUE, 0, -1)
    return sum(broker.DRAIN_TASK.encode() in message for message in queued)


def signal_cleared(redis_client: Any) -> int:
    """Send the signals given so far, clear the stream's signal as a drain does; return drains queued.

    In this order, a signal still held by the process's signaller cannot set
    the stream's signal again after the clear, which would merge the next
    signal into a drain queued before it.
    """
    import broker

    assert broker.drain_signaller.flush()
    redis_client.delete(broker.STREAM_SIGNAL_KEY)
    return drains_queued(redis_client)


def an_api_key_id() -> uuid.UUID:
    """Return the id of the newest API key, to record items as the service layer does."""
    from shared.models import ApiKey

    with db.transaction() as session:
        return session.query(ApiKey.id).order_by(ApiKey.created_at.desc()).limit(1).scalar()


def test_one_drain_is_signalled_after_the_commit(
    service_headers: dict[str, str], wallet_factory: Callable[..., uuid.UUID], redis_client: Any
) -> None:

    wallets = [wallet_factory() for _ in range(6)]
    api_key_id = an_api_key_id()
    items = [BatchItem(deposit(w), str(uuid.uuid4()), api_key_id) for w in wallets * 3]
    before = signal_cleared(redis_client)
    with db.transaction() as session:
        record_transactions(session, items)
        assert drains_queued(redis_client) == before  # nothing before the commit
    assert drains_queued(redis_client) == before + 1  # eighteen items, one drain
    # The same items again replay; their pending transactions signal the stream again.
    signal_cleared(redis_client)
    with db.transaction() as session:
        again = record_transactions(session, items)
    assert all(o.replayed for o in again)  # type: ignore[union-attr]
    assert drains_queued(redis_client) == before + 2


def test_nothing_is_recorded_when_the_batch_does_not_commit(
    wallet_factory: Callable[..., uuid.UUID], redis_client: Any
) -> None:

    a = wallet_factory()
    api_key_id = an_api_key_id()
    keys = [str(uuid.uuid4()) for _ in range(5)]
    items = [BatchItem(deposit(a), k, api_key_id) for k in keys]
    before = signal_cleared(redis_client)
    with pytest.raises(RuntimeError), db.transaction() as session:
        record_transactions(session, items)
        raise RuntimeError("the commit never happens")
    assert count_keys(keys) == 0
    assert drains_queued(redis_client) == before  # and nothing is signalled


def test_items_without_a_group_commit_as_one_statement_and_signal_after_it(
    wallet_factory: Callable[..., uuid.UUID], redis_client: Any
) -> None:

    a = wallet_factory()
    api_key_id = an_api_key_id()
    keys = [str(uuid.uuid4()) for _ in range(3)]
    items = [BatchItem(deposit(a), k, api_key_id) for k in keys]
    items.append(BatchItem(deposit(uuid.uuid4()), str(uuid.uuid4()), api_key_id))  # no wallet
    before = signal_cleared(redis_client)
    outcomes = intake.record(items)
    assert [type(o).__name__ for o in outcomes] == ["Recorded"] * 3 + ["NotFound"]
    assert count_keys(keys) == 3  # durable when record returns
    assert drains_queued(redis_client) == before + 1
    again = intake.record(items[:1])  # the key replays, read back after the statement
    assert again[0].replayed  # type: ignore[union-attr]


def test_a_statement_that_fails_records_none_of_its_items(
    wallet_factory: Callable[..., uuid.UUID], redis_client: Any
) -> None:
    from sqlalchemy.exc import DBAPIError

    a = wallet_factory()
    api_key_id = an_api_key_id()
    keys = [str(uuid.uuid4()) for _ in range(4)]
    items = [BatchItem(deposit(a), k, api_key_id) for k in keys[:3]]
    # Beyond bigint: the database refuses the statement at its last item.
    too_large = TransactionRequest(TransactionType.DEPOSIT, 2**63, "SGD", None, a)
    items.append(BatchItem(too_large, keys[3], api_key_id))
    before = signal_cleared(redis_client)
    with pytest.raises(DBAPIError) as raised:
        intake.record(items)
    assert not db.is_transient(raised.value)  # a fault to report, not one to retry
    assert count_keys(keys) == 0
    assert drains_queued(redis_client) == before
    assert intake.record(items[:3])[0].replayed is False  # type: ignore[union-attr]


def test_autocommit_runs_the_callbacks_of_what_committed_even_when_the_block_raises() -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError), db.autocommit() as session:
        db.after_commit(session, lambda: ran.append("sent"))
        raise RuntimeError("after the statement committed")
    assert ran == ["sent"]
