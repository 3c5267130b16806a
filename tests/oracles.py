"""Oracles: what the clients know they sent must explain the ledger, or the test fails.

A check of the ledger against itself (``assert_ledger_consistent``) passes on
a processor that gives payments up: failing every in-flight transaction
``retries_exhausted`` under a fault, or never applying one, leaves a
consistent ledger. These checks compare the database with a :class:`Book`,
the clients' own record of every request the API accepted (its body, its id,
when it was sent and answered), and fail when

(a) a transaction failed for a reason the test did not provoke: a fault may
    delay a transaction, never fail it (docs/architecture.md, invariant 4;
    ``retries_exhausted`` is only for a poison transaction);
(b) a wallet's balance or held amount is not what the accepted requests and
    their final statuses add up to (opening + completed credits - completed
    debits; an open hold reserves its amount, a capture moves money, a void
    or an expiry releases it, a reversal moves money back along its original),
    or an original's completed reversals add up to more than its amount;
(c) a transaction touches the test's wallets that no client submitted (an
    expiry of one of the clients' holds is the processor's own and allowed);
(d) a wallet's ledger entries (or hold entries) are not in acceptance order:
    an entry of a transaction that was sent after another had been accepted
    precedes that other's entry (invariant 6);

and, through :func:`assert_applied_once` and ``assert_ledger_consistent``,
when a transaction was applied other than once or the ledger disagrees with
itself. Every problem found is reported at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import text

from shared import db
from shared.ledger.money import parse_amount
from tests.helpers import assert_ledger_consistent, statuses, submit

#: Where a transaction may end; a hold may still be open (``held``) when the test ends.
FINAL_STATUSES = {"completed", "failed", "voided", "expired"}
HOLD_FINAL_STATUSES = FINAL_STATUSES | {"held"}


#: The type of the transaction each ``POST /v1/transactions/{id}/<verb>`` records.
_TYPE_BY_VERB = {"capture": "capture", "void": "void", "reverse": "reversal"}


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """One request the API accepted.

    Attributes:
        id: the transaction id the answer carried.
        type: ``deposit``, ``withdrawal``, ``transfer``, ``group``, ``hold``,
            ``capture``, ``void`` or ``reversal``.
        body: the JSON body sent (None for a void or a capture of the whole hold;
            a reversal's names its ``amount``, or the oracles cannot tell it).
        hold_id: the hold a capture or void names, or the original a reversal names.
        sent_at: ``time.monotonic()`` when its first attempt was sent.
        answered_at: ``time.monotonic()`` when the accepting answer arrived.
    """

    id: str
    type: str
    body: dict[str, Any] | None
    hold_id: str | None
    sent_at: float
    answered_at: float


class Book:
    """The clients' record of what they sent and had accepted; threads share one.

    Args:
        wallets: the test's wallets. Every transaction that touches one must be
            in the book, and each one's final balance is checked.
        opening: balances in minor units of wallets that did not start empty.
    """

    def __init__(self, wallets: Iterable[Any], *, opening: dict[str, int] | None = None) -> None:
        self.wallets = [str(w) for w in wallets]
        self.opening = {w: 0 for w in self.wallets} | (opening or {})
        self._accepted: dict[str, Accepted] = {}
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        """Return the accepted transaction ids, in the order they were recorded."""
        with self._lock:
            return list(self._accepted)

    @property
    def accepted(self) -> dict[str, Accepted]:
        """Return every accepted request by transaction id (a copy)."""
        with self._lock:
            return dict(self._accepted)

    def record(
        self,
        transaction_id: Any,
        body: dict[str, Any] | None,
        *,
        sent_at: float,
        path: str = "",
    ) -> str:
        """Record an accepted request answered just now; return its id as a string.

        Args:
            transaction_id: the id the answer carried.
            body: the body sent.
            sent_at: ``time.monotonic()`` before its first attempt was sent
                (a retry with the same Idempotency-Key is the same request).
            path: the URL path of a capture, void or reversal
                (``/v1/transactions/<hold>/capture``); empty for ``POST /v1/transactions``.
        """
        answered_at = time.monotonic()
        if path:
            _, hold_id, verb = path.rstrip("/").rsplit("/", 2)
            kind, hold = _TYPE_BY_VERB[verb], hold_id
        else:
            assert body is not None
            kind, hold = str(body["type"]), None
        entry = Accepted(str(transaction_id), kind, body, hold, sent_at, answered_at)
        with self._lock:
            known = self._accepted.setdefault(entry.id, entry)
        assert known.body == body and known.hold_id == hold, (
            f"one id for two requests: {known} and {entry}"
        )
        return entry.id

    def submit(
        self, client: Any, headers: dict[str, str], body: dict[str, Any], key: str | None = None
    ) -> Any:
        """POST ``body`` with a Flask test client (:func:`tests.helpers.submit`); record it if accepted.

        Returns the response.
        """
        sent_at = time.monotonic()
        response = submit(client, headers, body, key)
        if response.status_code in (200, 202):
            self.record(response.get_json()["id"], body, sent_at=sent_at)
        return response


def assert_explained(
    book: Book, *, allowed_failures: Collection[str] = (), context: str = ""
) -> dict[str, dict[str, Any]]:
    """Check the ledger against ``book`` (the module's oracles a-d), once every transaction ended.

    Call it after waiting for the transactions (``wait_terminal``): it does not wait.

    Args:
        book: what the clients sent and had accepted.
        allowed_failures: the failure codes the test provoked (``insufficient_funds``
            for spending more than a wallet has, ``hold_not_open`` for racing
            captures, ...). Any other code, ``retries_exhausted`` included, fails.
        context: appended to the failure's message (a worker's log, say).

    Returns:
        The final statuses by id (``tests.helpers.statuses``).

    Raises:
        AssertionError: listing every problem found.
    """
    accepted = book.accepted
    final = statuses(accepted)
    found = {
        "(a) statuses": _unexplained_statuses(accepted, final, set(allowed_failures)),
        "applied once": _applied_other_than_once(list(accepted)),
        "(c) orphans": _orphans(book, accepted),
        "(d) order": _out_of_order(book, accepted),
        "(b) balances": _unexplained_balances(book, accepted, final),
        "ledger": _ledger_inconsistency(),
    }
    report = [
        f"{oracle}: {len(lines)} problems\n" + "\n".join(f"  - {line}" for line in lines[:8])
        for oracle, lines in found.items()
        if lines
    ]
    assert not report, (
        f"{len(accepted)} accepted transactions are not explained:\n"
        + "\n".join(report)
        + (f"\n{context[-3000:]}" if context else "")
    )
    return final


def _ledger_inconsistency() -> list[str]:
    """Return what ``assert_ledger_consistent`` finds wrong, if anything."""
    try:
        assert_ledger_consistent()
    except AssertionError as error:
        return [str(error)]
    return []


def _unexplained_statuses(
    accepted: dict[str, Accepted], final: dict[str, dict[str, Any]], allowed: set[str]
) -> list[str]:
    """(a) Accepted transactions that are missing, not ended, or failed for an unprovoked reason."""
    problems = []
    for transaction_id, request in accepted.items():
        status = final.get(transaction_id)
        if status is None:
            problems.append(f"accepted {request.type} {transaction_id} does not exist")
            continue
        ends = HOLD_FINAL_STATUSES if request.type == "hold" else FINAL_STATUSES
        if status["status"] not in ends:
            problems.append(f"{request.type} {transaction_id} ended {status['status']}")
        elif status["status"] == "failed" and status["failure_code"] not in allowed:
            problems.append(
                f"{request.type} {transaction_id} failed {status['failure_code']} "
                f"(the test provoked only {sorted(allowed)}) after {status['attempts']} attempts"
            )
    return problems


def _unexplained_balances(
    book: Book, accepted: dict[str, Accepted], final: dict[str, dict[str, Any]]
) -> list[str]:
    """(b) Wallets whose balance or held amount differs from what the accepted requests add up to."""
    balance = defaultdict(int, book.opening)
    held: defaultdict[str, int] = defaultdict(int)
    outcomes: defaultdict[str, list[str]] = defaultdict(list)  # hold id -> completed operations
    reversed_minor: defaultdict[str, int] = defaultdict(int)  # original id -> completed reversals
    problems = []
    for transaction_id, request in accepted.items():
        status = final.get(transaction_id, {}).get("status")
        if request.type == "hold":
            assert request.body is not None
            if status == "held":
                held[request.body["source_wallet_id"]] += _minor(request.body)
            continue
        if status != "completed":
            continue
        if request.type in ("capture", "void"):
            assert request.hold_id is not None
            outcomes[request.hold_id].append(request.type)
            hold = accepted.get(request.hold_id)
            if hold is None:
                problems.append(f"{request.type} {transaction_id} of a hold no client sent")
                continue
            if request.type == "capture":
                source, destination, amount = _capture_movement(hold, request)
                balance[source] -= amount
                balance[destination] += amount
            continue
        if request.type == "reversal":
            original = accepted.get(str(request.hold_id))
            if original is None or original.type not in _REVERSIBLE:
                problems.append(f"reversal {transaction_id} of a transaction no client sent")
                continue
            source, destination, original_minor = _movement(accepted, original)
            amount = parse_amount((request.body or {})["amount"], _currency(accepted, original))
            balance[destination] -= amount  # back: from the original's destination to its source
            balance[source] += amount
            reversed_minor[original.id] += amount
            if reversed_minor[original.id] > original_minor:
                problems.append(
                    f"{original.type} {original.id} of {original_minor} has completed reversals "
                    f"of {reversed_minor[original.id]}"
                )
            continue
        for source, destination, amount in _legs(request.body or {}):
            balance[source] -= amount
            balance[destination] += amount
    ended_by = {"completed": ["capture"], "voided": ["void"]}  # else: by none of the clients'
    for hold_id in {t for t, r in accepted.items() if r.type == "hold"} | set(outcomes):
        status = final.get(hold_id, {}).get("status")
        if outcomes[hold_id] != ended_by.get(str(status), []):
            problems.append(f"hold {hold_id} is {status}; completed on it: {outcomes[hold_id]}")
    for wallet_id, stored_balance, stored_held in _wallets(book.wallets):
        if (stored_balance, stored_held) != (balance[wallet_id], held[wallet_id]):
            problems.append(
                f"wallet {wallet_id} has balance {stored_balance}, held {stored_held}; "
                f"the accepted requests add up to {balance[wallet_id]}, held {held[wallet_id]}"
            )
    return problems


_REVERSIBLE = ("deposit", "withdrawal", "transfer", "capture")


def _capture_movement(hold: Accepted, capture: Accepted) -> tuple[str, str, int]:
    """Return ``(source, destination, minor units)`` a completed capture of ``hold`` moved."""
    assert hold.body is not None
    body = {**hold.body, **(capture.body or {})}
    destination = str(body.get("destination_wallet_id") or "system")
    return hold.body["source_wallet_id"], destination, _minor(body)


def _movement(accepted: dict[str, Accepted], original: Accepted) -> tuple[str, str, int]:
    """Return ``(source, destination, minor units)`` a completed single-leg transaction moved."""
    if original.type == "capture":
        return _capture_movement(accepted[str(original.hold_id)], original)
    [movement] = _legs(original.body or {})
    return movement


def _currency(accepted: dict[str, Accepted], request: Accepted) -> str:
    """Return the currency of a single-leg request (a capture's is its hold's)."""
    if request.type == "capture":
        request = accepted[str(request.hold_id)]
    return str((request.body or {}).get("currency", "SGD"))


def _minor(body: dict[str, Any]) -> int:
    """Return a body's ``amount`` in minor units of its ``currency`` (SGD if it names none)."""
    return parse_amount(body["amount"], body.get("currency", "SGD"))


def _legs(body: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Return ``(source, destination, minor units)`` of each movement a completed body makes.

    Deposits come from, and withdrawals go to, the currency's system wallet
    (named ``"system"``: it is never one of the test's wallets).
    """
    if body["type"] == "group":
        return [
            (leg["source_wallet_id"], leg["destination_wallet_id"], _minor(leg))
            for leg in body["legs"]
        ]
    source = body.get("source_wallet_id") or "system"
    destination = body.get("destination_wallet_id") or "system"
    return [(str(source), str(destination), _minor(body))]


def _wallets(wallet_ids: list[str]) -> list[Any]:
    """Return ``(id, balance_minor, held_minor)`` of each wallet, ids as strings."""
    with db.transaction() as session:
        rows = session.execute(
            text("SELECT id, balance_minor, held_minor FROM wallets WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(w) for w in wallet_ids]},
        ).all()
    return [(str(r.id), r.balance_minor, r.held_minor) for r in rows]


def _orphans(book: Book, accepted: dict[str, Accepted]) -> list[str]:
    """(c) Transactions on the test's wallets that no client submitted.

    An expiry of a hold in the book is the hold-expiry job's, and allowed.
    """
    holds = {t for t, r in accepted.items() if r.type == "hold"}
    wallet_ids = [uuid.UUID(w) for w in book.wallets]
    with db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT t.id, t.type, t.status, t.hold_id FROM transactions t
                WHERE t.source_wallet_id = ANY(:ids) OR t.destination_wallet_id = ANY(:ids)
                   OR t.lane_wallet_id = ANY(:ids)
                   OR (t.type = 'group' AND EXISTS (
                       SELECT 1 FROM jsonb_array_elements(t.legs) leg
                       WHERE leg->>'source_wallet_id' = ANY(:texts)
                          OR leg->>'destination_wallet_id' = ANY(:texts)))
                UNION
                SELECT e.transaction_id, t.type, t.status, t.hold_id
                FROM ledger_entries_all e LEFT JOIN transactions t ON t.id = e.transaction_id
                WHERE e.wallet_id = ANY(:ids)
                UNION
                SELECT h.transaction_id, t.type, t.status, t.hold_id
                FROM hold_entries h LEFT JOIN transactions t ON t.id = h.transaction_id
                WHERE h.wallet_id = ANY(:ids)
                """
            ),
            {"ids": wallet_ids, "texts": book.wallets},
        ).all()
    return [
        f"{r.type} {r.id} ({r.status}) on the test's wallets was submitted by no client"
        for r in rows
        if str(r.id) not in accepted and not (r.type == "expiry" and str(r.hold_id) in holds)
    ]


def _out_of_order(book: Book, accepted: dict[str, Accepted]) -> list[str]:
    """(d) Entries of a wallet out of acceptance order.

    Each wallet's ledger entries (by ``sequence``) and hold entries (by
    insertion) should follow their transactions' ``lane_sequence``. Two
    transactions whose requests overlapped in time may apply either way round:
    the one that drew the smaller number may commit, and so become visible to
    the stream, after the other (docs/architecture.md, invariant 6). A
    pair out of ``lane_sequence`` is therefore an error only when the client
    knows the later-applied one had been accepted before the other was sent.
    """
    query = """
        SELECT e.wallet_id, e.transaction_id, t.lane_sequence
        FROM {table} e JOIN transactions t ON t.id = e.transaction_id
        WHERE e.wallet_id = ANY(:ids) ORDER BY e.wallet_id, e.{order}
    """
    problems = []
    for table, order in (("ledger_entries_all", "sequence"), ("hold_entries", "id")):
        with db.transaction() as session:
            rows = session.execute(
                text(query.format(table=table, order=order)),
                {"ids": [uuid.UUID(w) for w in book.wallets]},
            ).all()
        by_wallet: defaultdict[str, list[Any]] = defaultdict(list)
        for row in rows:
            by_wallet[str(row.wallet_id)].append(row)
        for wallet_id, entries in by_wallet.items():
            problems += _inversions(table, wallet_id, entries, accepted)
    return problems


def _inversions(
    table: str, wallet_id: str, entries: list[Any], accepted: dict[str, Accepted]
) -> list[str]:
    """Return the acceptance-order violations among one wallet's entries, in applied order."""
    problems: list[str] = []
    highest = 0  # the largest lane_sequence applied so far: the common case is no inversion
    for index, later in enumerate(entries):
        if later.lane_sequence >= highest:
            highest = later.lane_sequence
            continue
        second = accepted.get(str(later.transaction_id))
        for earlier in entries[:index]:
            first = accepted.get(str(earlier.transaction_id))
            if earlier.lane_sequence <= later.lane_sequence or first is None or second is None:
                continue  # in order, or not the clients' (an expiry): no known order
            if first.sent_at > second.answered_at:
                problems.append(
                    f"{table} of wallet {wallet_id}: {first.type} {first.id} (lane_sequence "
                    f"{earlier.lane_sequence}, sent after the other was accepted) applied "
                    f"before {second.type} {second.id} ({later.lane_sequence})"
                )
                if len(problems) >= 5:
                    return problems
    return problems


def assert_applied_once(transaction_ids: list[str]) -> None:
    """Every transaction left exactly the entries of one apply, a failed one none.

    Ledger entries: two per leg of a completed deposit, withdrawal, transfer,
    capture, reversal or group. Hold entries: one for an applied hold (whatever ended it
    since), one for a completed capture, void or expiry.
    """
    problems = _applied_other_than_once(transaction_ids)
    assert not problems, "\n".join(problems)


def _applied_other_than_once(transaction_ids: list[str]) -> list[str]:
    """Return a line for each transaction whose entries are not those of exactly one apply."""
    with db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT t.id, t.type, t.status,
                    (SELECT count(*) FROM ledger_entries_all e WHERE e.transaction_id = t.id) AS n,
                    (SELECT count(*) FROM hold_entries h WHERE h.transaction_id = t.id) AS held,
                    CASE WHEN t.status <> 'completed' THEN 0
                         WHEN t.type = 'group' THEN 2 * jsonb_array_length(t.legs)
                         WHEN t.type IN ('deposit', 'withdrawal', 'transfer', 'capture',
                                         'reversal') THEN 2
                         ELSE 0 END AS n_expected,
                    CASE WHEN t.type = 'hold' AND t.status <> 'failed' AND t.status <> 'pending'
                              THEN 1
                         WHEN t.type IN ('capture', 'void', 'expiry') AND t.status = 'completed'
                              THEN 1
                         ELSE 0 END AS held_expected
                FROM transactions t WHERE t.id = ANY(:ids)
                """
            ),
            {"ids": [uuid.UUID(t) for t in transaction_ids]},
        ).all()
    return [
        f"{r.type} {r.id} ({r.status}) applied other than once: {r.n} ledger entries "
        f"(expected {r.n_expected}), {r.held} hold entries (expected {r.held_expected})"
        for r in rows
        if (r.n, r.held) != (r.n_expected, r.held_expected)
    ]
