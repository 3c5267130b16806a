"""``/v1/transactions``: submit (idempotent), read with long-poll, list, cancel, ops retry."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Response, g, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from api.auth import current_actor, require_role
from api.edge import body_limit, request_json
from api.errors import refusal_json
from api.limits import costs
from api.observe import request_id
from api.render import answer, page
from api.requests import json_body, json_body_or_empty, path_id, query
from api.responses import (
    BatchAccepted,
    BatchRefused,
    BatchReplayed,
    BatchResults,
    BulkRetryResult,
    Transaction,
)
from api.schemas import (
    BATCH_ITEMS_MAX,
    BatchSubmission,
    BulkRetryBody,
    CancelBody,
    TransactionListQuery,
    WaitQuery,
    check_idempotency_key,
    parse_batch_item,
    parse_hold_operation,
    parse_reversal,
    parse_submission,
)
from shared import db
from shared.config import get_settings
from shared.ledger.errors import TallyError
from shared.ledger.states import TransactionStatus, TransactionType
from shared.metrics import TRANSACTIONS_SUBMITTED
from shared.rendering import Shape
from shared.services import backpressure as intake_backpressure
from shared.services import bulk_retry, intake, scheduled, transactions
from shared.services.api_keys import Role
from shared.services.group_commit import GroupCommitter
from shared.services.holds import submit_hold_operation
from shared.services.intake import BatchItem, Outcome, Recorded
from shared.services.reversals import submit_reversal

blueprint = Blueprint("transactions", __name__, url_prefix="/v1/transactions")

#: The largest batch body accepted, in bytes (1 MiB): 1,000 items of about 1 KB.
BATCH_BODY_BYTES_MAX = 1024 * 1024


def _idempotency_key() -> str:
    return check_idempotency_key(request.headers.get("Idempotency-Key"))


def _transaction_id(value: str) -> uuid.UUID:
    return path_id(value, not_found_code="transaction_not_found")


@blueprint.post("")
def submit() -> Response:
    """Record a transaction as pending: 202, or 200 with ``Idempotent-Replayed`` for a replay.

    Concurrent submissions to one API process share one INSERT and one commit
    (``shared.services.group_commit``); each gets its own answer.
    """
    idempotency_key = _idempotency_key()
    item = BatchItem(parse_submission(json_body()), idempotency_key, g.api_key_id, request_id())
    outcome = _committer().submit(item)
    if isinstance(outcome, TallyError):
        raise outcome
    return _accepted(outcome.transaction, outcome.replayed)


def _record_items(
    items: Sequence[BatchItem],
    autocommit: db.AutocommitSessions = db.autocommit,
) -> list[Outcome]:
    """Record submissions in one database transaction, once backpressure lets them; return
    their outcomes, in order (a group of single submissions, or a batch's valid items).
    ``autocommit`` is where a statement in autocommit gets its session (``intake.record``)."""
    backpressure = intake_backpressure.for_this_process()
    backpressure.admit()
    outcomes = intake.record(items, autocommit=autocommit)
    for outcome in outcomes:
        if isinstance(outcome, Recorded):
            _note_accepted(backpressure, outcome.transaction, outcome.replayed)
    return outcomes


def _note_accepted(
    backpressure: intake_backpressure.Backpressure, transaction: Any, replayed: bool
) -> None:
    """Tell ``backpressure`` of a transaction this request recorded as pending (not a replay)."""
    if not replayed and transaction.status == TransactionStatus.PENDING:
        backpressure.accepted(transaction.lane_sequence)


@functools.cache
def _committer() -> GroupCommitter:
    """Return this process's committer of single submissions (one per process).

    Its leader records one group at a time, so it keeps one autocommit session
    between groups (``shared.db.KeptAutocommit``) rather than opening one per group.
    """
    kept = db.KeptAutocommit()
    return GroupCommitter(
        functools.partial(_record_items, autocommit=kept.session),
        gather_seconds=get_settings().intake_gather_seconds,
    )


def _batch_item_count() -> int:
    """Return the number of items of a batch request; 1 for a body the route will refuse."""
    try:
        body = request_json()
    except (TallyError, HTTPException):  # the edge answers it
        return 1
    items = body.get("transactions") if isinstance(body, dict) else None
    if isinstance(items, list) and 1 <= len(items) <= BATCH_ITEMS_MAX:
        return len(items)
    return 1


@blueprint.post("/batch")
@body_limit(BATCH_BODY_BYTES_MAX, strings_checked_by_route=True)
@costs(_batch_item_count)
def submit_batch() -> Response:
    """Record up to 1,000 transactions in one commit: 200 with one result per item, in order.

    Each item is a ``POST /v1/transactions`` body plus its ``idempotency_key``,
    and is judged alone, as that call judges it: ``202`` recorded, ``200``
    replayed (an earlier request or an earlier item used the key with the
    same request), or a ``4xx`` problem that refuses this item only. Every
    recorded item is durable when the answer is sent, and the items are
    accepted in their order in the batch. The rate limit counts each item.
    """
    batch = BatchSubmission.model_validate(json_body())
    parsed: list[BatchItem | dict[str, Any]] = []  # each item, or the problem that refused it
    for raw in batch.transactions:
        try:
            parsed.append(parse_batch_item(raw, api_key_id=g.api_key_id, request_id=request_id()))
        except (TallyError, ValidationError) as error:
            parsed.append(refusal_json(error))
    outcomes = iter(_record_items([item for item in parsed if isinstance(item, BatchItem)]))
    results = [
        _batch_result(next(outcomes) if isinstance(item, BatchItem) else item) for item in parsed
    ]
    return answer(BatchResults, {"data": results})


def _batch_result(outcome: Outcome | dict[str, Any]) -> Shape:
    """Return one item's result (``api.responses.BatchResults``): ``202`` recorded, ``200``
    replayed, or the problem that refused it."""
    if isinstance(outcome, TallyError):
        outcome = refusal_json(outcome)
    if isinstance(outcome, dict):
        return BatchRefused.of({"status": outcome["status"], "problem": outcome})
    transaction = Transaction.of(outcome.transaction)
    if outcome.replayed:
        return BatchReplayed(status=200, replayed=True, transaction=transaction)
    TRANSACTIONS_SUBMITTED.labels(outcome.transaction.type).inc()
    return BatchAccepted(status=202, transaction=transaction)


def _record(
    service: Callable[..., tuple[Any, bool]], request: object, idempotency_key: str
) -> Response:
    """Record ``request`` with an intake ``service`` in one database transaction, once
    backpressure lets it; answer it."""
    backpressure = intake_backpressure.for_this_process()
    backpressure.admit()
    with db.transaction() as session:
        transaction, replayed = service(
            session,
            request,
            api_key_id=g.api_key_id,
            idempotency_key=idempotency_key,
            request_id=request_id(),
        )
    _note_accepted(backpressure, transaction, replayed)
    return _accepted(transaction, replayed)


def _accepted(transaction: Any, replayed: bool) -> Response:
    """Answer a recorded transaction: 202 with ``Retry-After``, or 200 for a replay."""
    headers = {"Location": f"/v1/transactions/{transaction.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
        return answer(Transaction, transaction, 200, headers)
    headers["Retry-After"] = "1"
    TRANSACTIONS_SUBMITTED.labels(transaction.type).inc()
    return answer(Transaction, transaction, 202, headers)


def _hold_operation(transaction_id: str, type_: TransactionType) -> Response:
    """Record a capture or void of a hold in its lane: 202 with the new transaction."""
    idempotency_key = _idempotency_key()
    operation = parse_hold_operation(type_, _transaction_id(transaction_id), json_body_or_empty())
    return _record(submit_hold_operation, operation, idempotency_key)


@blueprint.post("/<transaction_id>/capture")
def capture(transaction_id: str) -> Response:
    """Capture a hold (all, or ``amount``) to ``destination_wallet_id`` or the system wallet."""
    return _hold_operation(transaction_id, TransactionType.CAPTURE)


@blueprint.post("/<transaction_id>/void")
def void(transaction_id: str) -> Response:
    """Void a hold: release its funds once applied."""
    return _hold_operation(transaction_id, TransactionType.VOID)


@blueprint.post("/<transaction_id>/reverse")
def reverse(transaction_id: str) -> Response:
    """Reverse a completed deposit, withdrawal, transfer or capture (all that is left, or ``amount``).

    Records a ``reversal`` that, once applied, moves the amount back from the
    original's destination to its source; it fails ``reversal_exceeds_amount``
    if the original's completed reversals would then exceed its amount.
    """
    idempotency_key = _idempotency_key()
    request_ = parse_reversal(_transaction_id(transaction_id), json_body_or_empty())
    return _record(submit_reversal, request_, idempotency_key)


@blueprint.post("/<transaction_id>/cancel")
def cancel(transaction_id: str) -> Response:
    """Cancel a scheduled transaction: 200 with it ``canceled``; any other status: 409 ``not_cancelable``."""
    CancelBody.model_validate(json_body_or_empty())
    with db.transaction() as session:
        transaction = scheduled.cancel_transaction(session, _transaction_id(transaction_id))
    return answer(Transaction, transaction)


@blueprint.get("/<transaction_id>")
def get_transaction(transaction_id: str) -> Response:
    """Return a transaction.

    ``?wait=N`` (0..30 s) is validated here; the wait itself happens in the
    server (``api.asgi``): it asks this route without ``wait`` and, while the
    answer is ``pending``, parks the request and asks again once the
    transaction settles or N seconds pass.
    """
    query(WaitQuery)
    with db.transaction() as session:
        transaction = transactions.get_transaction(session, _transaction_id(transaction_id))
    return answer(Transaction, transaction)


@blueprint.get("")
def list_transactions() -> Response:
    """List transactions, newest first, filtered by status, type, wallet and metadata.

    ``metadata[KEY]=VALUE`` (repeatable) keeps the transactions whose metadata
    holds every pair exactly; a malformed one is refused with 422 naming it.
    """
    params = query(TransactionListQuery)
    with db.transaction() as session:
        rows, next_cursor = transactions.list_transactions(
            session,
            status=params.status,
            type_=params.type,
            wallet_id=params.wallet_id,
            limit=params.limit,
            cursor=params.cursor,
            metadata=params.metadata,
        )
    return page(Transaction, rows, next_cursor)


@blueprint.post("/retry")
@require_role(Role.OPS)
def retry_many() -> Response:
    """Retry every failed transaction the body's filters select (ops): 200 with count and ids.

    ``dry_run: true`` only counts. Each retried transaction is enqueued after commit.
    """
    body = BulkRetryBody.model_validate(json_body_or_empty())
    with db.transaction() as session:
        ids = bulk_retry.retry_failed(
            session,
            body.to_filter(),
            dry_run=body.dry_run,
            actor=current_actor(),
        )
    return answer(
        BulkRetryResult, {"count": len(ids), "dry_run": body.dry_run, "transaction_ids": ids}
    )


@blueprint.post("/<transaction_id>/retry")
@require_role(Role.OPS)
def retry(transaction_id: str) -> Response:
    """Move a failed transaction back to pending and enqueue it (ops): 202."""
    with db.transaction() as session:
        transaction = transactions.retry_transaction(
            session,
            _transaction_id(transaction_id),
            actor=current_actor(),
        )
    headers = {"Location": f"/v1/transactions/{transaction.id}", "Retry-After": "1"}
    return answer(Transaction, transaction, 202, headers)
