"""Intake: record submitted transactions as ``pending``, idempotently; a drain is sent after commit.

One path records both a single submission and a batch
(:func:`record_transactions`; :func:`submit_transaction` is a batch of one).
Idempotency is ``shared.services.idempotency``'s: one ``Idempotency-Key`` per
API key maps to one transaction. A request that fails validation records
nothing, so its key stays free for a corrected request. A run of
single-wallet items (deposit, withdrawal, transfer, hold) takes one
statement, however many items it holds; a group is recorded by
``shared.services.groups``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, cast

import orjson
from sqlalchemy.orm import Session

import broker
from shared import db
from shared.ledger.errors import TallyError, ValidationFailed
from shared.ledger.states import TransactionType
from shared.models import Transaction
from shared.services import groups
from shared.services.idempotency import fingerprint, replay_many
from shared.services.wallets import currency_not_enabled, wallet_not_found


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A validated submission, as parsed at the HTTP edge.

    Attributes:
        type: deposit, withdrawal, transfer, hold or group.
        amount_minor: positive amount in minor units of ``currency`` (a group: the
            sum of its legs' amounts).
        currency: ISO 4217 code (a group: its first leg's).
        source_wallet_id: the debited wallet (withdrawal, transfer, hold), else None.
        destination_wallet_id: the credited wallet (deposit, transfer), else None.
        description: free text, at most 500 characters.
        metadata: flat string map, at most 50 keys.
        expires_in_seconds: a hold's lifetime in seconds; None for other types.
        legs: a group's legs; empty for other types.
        scheduled_at: when it becomes due (UTC, ``shared.ledger.schedule``); a
            later time than the database's ``now()`` records it ``scheduled``;
            None: due at once.
    """

    type: TransactionType
    amount_minor: int
    currency: str
    source_wallet_id: uuid.UUID | None = None
    destination_wallet_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    expires_in_seconds: int | None = None
    legs: tuple[groups.LegRequest, ...] = ()
    scheduled_at: dt.datetime | None = None

    def fingerprint(self) -> str:
        """Return the SHA-256 (hex) of the request's canonical JSON, to detect a reused key."""
        # Field by field rather than dataclasses.asdict, whose deep copy showed in
        # the intake profile; legs are dataclasses of plain values.
        fields = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        fields["legs"] = [dataclasses.astuple(leg) for leg in self.legs]
        if self.scheduled_at is None:
            # Absent, so that requests recorded before scheduling keep their fingerprints.
            del fields["scheduled_at"]
        return fingerprint(fields)


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(TransactionRequest))


@dataclasses.dataclass(frozen=True, slots=True)
class BatchItem:
    """One transaction to record, and who sent it.

    Attributes:
        request: the validated submission.
        idempotency_key: the client's key for it; keys are scoped to ``api_key_id``.
        api_key_id: the submitting API key.
        request_id: the HTTP request's ``X-Request-Id``, stored with the row so
            the worker's log lines name it.
    """

    request: TransactionRequest
    idempotency_key: str
    api_key_id: uuid.UUID
    request_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Recorded:
    """An item recorded by this call (``replayed`` False) or earlier under its key (True)."""

    transaction: Transaction
    replayed: bool


#: What :func:`record_transactions` answers for one item: recorded, or why it was refused.
Outcome = Recorded | TallyError

#: The transactions columns the intake statement returns, in this order, after
#: the three columns it adds (``_record_run`` reads its rows by position).
_RETURNED = tuple(column.name for column in Transaction.__table__.columns)

#: One round trip for a run of single-wallet items, whose one parameter is
#: the items as a JSON array of objects (``_item_json``): resolve the named
#: wallets and each currency's system wallet (one primary-key lookup per item
#: each: as joins, the planner, which guesses 100 rows for ``jsonb_to_recordset``,
#: hashed the whole wallets table twice per statement, docs/benchmarks.md,
#: series 18), and insert each item only if
#: every wallet it names exists in its currency and the currency is enabled
#: (every enabled currency has a system wallet). The outer SELECT returns one
#: row per item, in item order, so a refused insert is explained without
#: another query. Of the items that share a key, the first the wallets allow
#: is inserted; a later one replays it. Rows are inserted in item order
#: (``ORDER BY ordinal``), so the ``lane_sequence`` default (``nextval``,
#: evaluated per inserted row) follows the items' order. An item whose
#: ``scheduled_at`` is after ``now()`` is recorded ``scheduled``
#: (``shared.services.scheduled``); an earlier one is pending as usual.
#:
#: One JSON document rather than an array per field: psycopg adapts fifteen
#: arrays element by element in Python, where orjson writes one string in
#: C (docs/benchmarks.md, series 15 and 20).
_RECORD_SQL = f"""
WITH item AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS i(
        id uuid, type text, amount_minor bigint, currency text, source_id uuid,
        destination_id uuid, lane_id uuid, description text, metadata jsonb,
        api_key_id uuid, idempotency_key text, request_hash text, expires_at timestamptz,
        request_id text, scheduled_at timestamptz, ordinal int)
), checked AS (
    SELECT item.*,
        (SELECT w.currency FROM wallets w WHERE w.id = item.source_id) AS source_currency,
        (SELECT w.currency FROM wallets w WHERE w.id = item.destination_id)
            AS destination_currency,
        (SELECT w.id FROM wallets w JOIN currencies c ON c.code = w.currency
         WHERE w.is_system AND w.currency = item.currency AND c.enabled) AS system_wallet_id
    FROM item
), allowed AS (
    SELECT DISTINCT ON (api_key_id, idempotency_key) * FROM checked
    WHERE system_wallet_id IS NOT NULL
        AND (source_id IS NULL OR source_currency = currency)
        AND (destination_id IS NULL OR destination_currency = currency)
    ORDER BY api_key_id, idempotency_key, ordinal
), inserted AS (
    INSERT INTO transactions (
        id, type, amount_minor, currency, source_wallet_id, destination_wallet_id,
        lane_wallet_id, description, metadata, api_key_id, idempotency_key,
        request_hash, expires_at, request_id, scheduled_at, status)
    SELECT id, type, amount_minor, currency,
        COALESCE(source_id, CASE WHEN type = 'deposit' THEN system_wallet_id END),
        COALESCE(destination_id, CASE WHEN type = 'withdrawal' THEN system_wallet_id END),
        lane_id, description, metadata, api_key_id, idempotency_key, request_hash,
        expires_at, request_id, CASE WHEN scheduled_at > now() THEN scheduled_at END,
        CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'pending' END
    FROM allowed
    ORDER BY ordinal
    ON CONFLICT ON CONSTRAINT transactions_idempotency_key DO NOTHING
    RETURNING *
)
SELECT checked.source_currency, checked.destination_currency, checked.system_wallet_id,
    {", ".join(f"inserted.{name}" for name in _RETURNED)}
FROM checked LEFT JOIN inserted ON inserted.id = checked.id
ORDER BY checked.ordinal
"""


def submit_transaction(
    session: Session,
    request: TransactionRequest,
    *,
    api_key_id: uuid.UUID,
    idempotency_key: str,
    request_id: str | None = None,
) -> tuple[Transaction, bool]:
    """Record ``request`` as a pending transaction; a drain is sent after commit.

    A batch of one for :func:`record_transactions`: a new key (the common
    case) costs one statement and the commit; a replay or a concurrent
    duplicate conflicts and is read back.

    Args:
        request: the validated submission.
        api_key_id: the submitting key; idempotency keys are scoped to it.
        idempotency_key: the client's ``Idempotency-Key``.
        request_id: the HTTP request's ``X-Request-Id``, stored with the row so
            the worker's log lines name it.

    Returns:
        ``(transaction, replayed)``: ``replayed`` is True when the key was seen
        before with the same request and the existing transaction is returned.

    Raises:
        IdempotencyKeyReused: the key was used with a different request.
        ValidationFailed: currency not enabled, source equals destination
            (``validation_failed``), or a wallet of another currency (``currency_mismatch``).
        NotFound: ``wallet_not_found``.
    """
    [outcome] = record_transactions(
        session,
        [BatchItem(request, idempotency_key, api_key_id, request_id)],
    )
    if isinstance(outcome, TallyError):
        raise outcome
    return outcome.transaction, outcome.replayed


def record(
    items: Sequence[BatchItem],
    *,
    autocommit: db.AutocommitSessions = db.autocommit,
) -> list[Outcome]:
    """Record ``items`` as :func:`record_transactions` does, in a database transaction of their own.

    Items without a group are one statement, so they run in autocommit
    (``autocommit``): the statement is their database transaction, and
    psycopg sends no ``BEGIN`` and ``COMMIT`` round trips around it. A group
    writes in several statements, so items with one run in
    ``shared.db.transaction``. Either way every item recorded is durable, and
    its drain sent, when this returns.

    Args:
        items: as :func:`record_transactions` takes them.
        autocommit: where the autocommit session comes from: ``shared.db.autocommit``,
            or the ``session`` of a ``shared.db.KeptAutocommit`` (the intake's group leader).

    Returns:
        One outcome per item, in order, as :func:`record_transactions` returns them.

    Raises:
        sqlalchemy.exc.DBAPIError: the database could not record them. Nothing is
            recorded, except when the failure comes after the one statement (in
            autocommit, while reading back a conflicting key): what it recorded
            stands, its drain is sent, and a retry with the same keys replays it.
    """
    if any(item.request.type is TransactionType.GROUP for item in items):
        with db.transaction() as session:
            return record_transactions(session, items)
    with autocommit() as session:
        return record_transactions(session, items)


def record_transactions(session: Session, items: Sequence[BatchItem]) -> list[Outcome]:
    """Record each item as a pending transaction, independently; send one drain after commit.

    Every run of consecutive single-wallet items (deposit, withdrawal,
    transfer, hold) is one statement (``_RECORD_SQL``); a group goes through
    ``shared.services.groups`` between two runs, in a savepoint when there is
    more than one item, so that its refusal undoes only its own writes.
    Statements run in item order, so the items get increasing
    ``lane_sequence`` in item order: the order of the items is their
    acceptance order (docs/architecture.md, "Batches at intake"). Nothing commits here:
    the caller's commit (or, for items without a group, the one statement in
    autocommit, :func:`record`) makes every recorded item durable at once,
    and one drain is sent after it if any is new or replayed and pending
    (``broker.send_after_commit``).

    Args:
        items: the validated requests with their idempotency keys and senders,
            at most a few thousand (each run is one statement's JSON parameter); they
            may come from different API keys and requests.

    Returns:
        One outcome per item, in order: ``Recorded`` (new, or ``replayed``: the
        key was seen with the same request, earlier or earlier in ``items``), or
        the ``TallyError`` that refused it: ``IdempotencyKeyReused``,
        ``ValidationFailed`` (currency not enabled, source equals destination,
        ``currency_mismatch``), ``NotFound`` (``wallet_not_found``).
    """
    outcomes: list[Outcome] = []
    run: list[BatchItem] = []
    for item in items:
        if item.request.type is not TransactionType.GROUP:
            run.append(item)
            continue
        outcomes += _record_run(session, run)
        run = []
        outcomes.append(_record_group(session, item, savepoint=len(items) > 1))
    outcomes += _record_run(session, run)
    return outcomes


def _record_group(session: Session, item: BatchItem, *, savepoint: bool) -> Outcome:
    """Record a group item with ``shared.services.groups``; return its outcome."""
    request = item.request
    try:
        with session.begin_nested() if savepoint else contextlib.nullcontext():
            transaction, replayed = groups.submit_group(
                session,
                request.legs,
                description=request.description,
                metadata=request.metadata,
                api_key_id=item.api_key_id,
                idempotency_key=item.idempotency_key,
                request_hash=request.fingerprint(),
                request_id=item.request_id,
                scheduled_at=request.scheduled_at,
            )
    except TallyError as error:
        return error
    return Recorded(transaction, replayed)


def _record_run(session: Session, run: Sequence[BatchItem]) -> list[Outcome]:
    """Record consecutive single-wallet items with one ``_RECORD_SQL``; return their outcomes.

    Items whose key conflicts are read back with one query
    (``shared.services.idempotency.replay_many``).
    """
    outcomes: list[Outcome | None] = [None] * len(run)
    rows: list[dict[str, Any]] = []
    sent: list[int] = []  # index in ``run`` of each row
    now = dt.datetime.now(dt.UTC)
    for index, item in enumerate(run):
        try:
            _check_distinct_wallets(item.request)
        except TallyError as error:
            outcomes[index] = error
            continue
        rows.append(_item_json(item, now, ordinal=len(rows)))
        sent.append(index)
    if not rows:
        return cast(list[Outcome], outcomes)
    results = db.driver_rows(session, _RECORD_SQL, (_rows_json(rows),))
    conflicts: list[int] = []  # index in ``rows``
    recorded = False
    for position, (source_currency, destination_currency, system_wallet_id, *inserted) in enumerate(
        results
    ):
        index = sent[position]
        if inserted[0] is not None:
            outcomes[index] = Recorded(_transient(inserted), False)
            recorded = True
            continue
        refusal = _refusal(
            run[index].request, system_wallet_id, source_currency, destination_currency
        )
        if refusal is not None:
            outcomes[index] = refusal
        else:
            conflicts.append(position)
    if recorded:
        broker.send_after_commit(session, broker.DRAIN)
    if conflicts:
        replayed = replay_many(
            session,
            requests=[
                (rows[p]["api_key_id"], rows[p]["idempotency_key"], rows[p]["request_hash"])
                for p in conflicts
            ],
        )
        for position, existing in zip(conflicts, replayed, strict=True):
            outcomes[sent[position]] = (
                existing if isinstance(existing, TallyError) else Recorded(existing, True)
            )
    return cast(list[Outcome], outcomes)


def _rows_json(rows: list[dict[str, Any]]) -> str:
    """Return ``rows`` (of :func:`_item_json`) as the JSON text of ``_RECORD_SQL``'s parameter.

    Every value of a row is one orjson writes natively: UUIDs as their
    canonical text and aware datetimes in RFC 3339 with their offset, which
    ``jsonb_to_recordset`` reads back as ``uuid`` and ``timestamptz`` (orjson's
    README, "Types"). One row costs about 0.4 µs against 8.7 for ``json.dumps``
    (docs/benchmarks.md, series 20).

    Raises:
        orjson.JSONEncodeError: a value of another type, which would be a bug here.
    """
    return orjson.dumps(rows).decode()


def _item_json(item: BatchItem, now: dt.datetime, *, ordinal: int) -> dict[str, Any]:
    """Return ``item`` as one object of ``_RECORD_SQL``'s JSON parameter.

    Ids and times stay Python values: :func:`_rows_json` writes them as
    PostgreSQL reads them back (``uuid``, ``timestamptz``).
    """
    request = item.request
    expires_at = None
    if request.expires_in_seconds is not None:
        expires_at = now + dt.timedelta(seconds=request.expires_in_seconds)
    return {
        "id": uuid.uuid4(),
        "type": request.type.value,
        "amount_minor": request.amount_minor,
        "currency": request.currency,
        "source_id": request.source_wallet_id,
        "destination_id": request.destination_wallet_id,
        "lane_id": _lane_of(request),
        "description": request.description,
        "metadata": request.metadata,
        "api_key_id": item.api_key_id,
        "idempotency_key": item.idempotency_key,
        "request_hash": request.fingerprint(),
        "expires_at": expires_at,
        "request_id": item.request_id,
        "scheduled_at": request.scheduled_at,
        "ordinal": ordinal,
    }


def _transient(values: Sequence[Any]) -> Transaction:
    """Return a Transaction (not attached to any session) from an inserted row's values.

    ``values`` are the row's columns in ``_RETURNED`` order. They go straight
    into the new instance's ``__dict__``, as the ORM's own loading does
    (``ClassManager.new_instance``), without the attribute events that
    ``Transaction(**values)`` fires for each of its ~30 columns: 2 µs against
    35 µs an instance, on every single submission.
    """
    transaction = _TRANSACTION_MANAGER.new_instance()
    transaction.__dict__.update(zip(_ATTRIBUTES, values, strict=True))
    return cast(Transaction, transaction)


_TRANSACTION_MANAGER = Transaction.__mapper__.class_manager

#: The Transaction attribute of each of ``_RETURNED``'s columns (``metadata`` is ``metadata_``).
_ATTRIBUTES = tuple(
    Transaction.__mapper__.get_property_by_column(column).key
    for column in Transaction.__table__.columns
)


def _check_distinct_wallets(request: TransactionRequest) -> None:
    """Raise unless the request's source and destination wallets differ.

    Raises:
        ValidationFailed: source and destination are the same wallet.
    """
    if (
        request.source_wallet_id is not None
        and request.source_wallet_id == request.destination_wallet_id
    ):
        raise ValidationFailed(
            "source and destination wallets must differ",
            errors=[{"field": "destination_wallet_id", "message": "equals source_wallet_id"}],
        )


def _lane_of(request: TransactionRequest) -> uuid.UUID:
    """Return the lane: the debited wallet, except a deposit's, which is its destination.

    A deposit's lane is the credited wallet so that it is ordered before the
    same wallet's later debits. A deposit's source and a withdrawal's
    destination are the currency's system wallet, filled in by the database.
    """
    lane = (
        request.destination_wallet_id
        if request.type is TransactionType.DEPOSIT
        else request.source_wallet_id
    )
    assert lane is not None  # the request schema requires it for the type
    return lane


def _refusal(
    request: TransactionRequest,
    system_wallet_id: uuid.UUID | None,
    source_currency: str | None,
    destination_currency: str | None,
) -> TallyError | None:
    """Return why ``_RECORD_SQL`` did not insert ``request``; None if the cause was its key.

    The statement found the currency's system wallet (None: the currency is
    not enabled) and each named wallet's currency (None: no such wallet).
    """
    if system_wallet_id is None:
        return currency_not_enabled(request.currency)
    for field, wallet_id, currency in (
        ("source_wallet_id", request.source_wallet_id, source_currency),
        ("destination_wallet_id", request.destination_wallet_id, destination_currency),
    ):
        if wallet_id is None:
            continue
        if currency is None:
            return wallet_not_found(wallet_id)
        if currency != request.currency:
            return ValidationFailed(
                f"wallet {wallet_id} holds {currency}, not {request.currency}",
                code="currency_mismatch",
                errors=[{"field": field, "message": f"wallet holds {currency}"}],
            )
    return None
