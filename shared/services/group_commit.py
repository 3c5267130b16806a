"""Group commit at intake: the concurrent submissions of one process share a statement and a commit.

Each ``POST /v1/transactions`` runs in a thread of the server's pool. Without
this, each would open its own database transaction: one INSERT and one
COMMIT (a WAL flush) per request. A :class:`GroupCommitter` lets a request
that finds another one recording wait for it and then go with the others
that queued meanwhile, as one ``shared.services.intake.record_transactions``
call: one multi-row INSERT and one commit for all of them (the technique of
PostgreSQL's own ``commit_delay`` and of TigerBeetle's batches, at the
request level).

- **Leader and followers.** The first request to arrive when none is
  recording leads: it records the queue and hands the lead to the first
  request that queued while it did, if any. A request never waits for a
  thread of its own kind to wake up: someone is always recording.
- **Gathering.** A leader goes at once when it is alone. When the last group
  had more than one request (others are in flight), it first waits up to
  ``gather_seconds`` for as many to queue, so that the next group fills up.
- **Key order.** A group is recorded in (API key, idempotency key) order, not
  in arrival order, so that groups of two processes that share keys (a
  client retrying on another connection) cannot deadlock.
- **Each request its own answer.** Each gets its own outcome (recorded,
  replayed or refused); items are independent in ``record_transactions``.
  If the group's database transaction fails, nothing of it is recorded and
  every request of the group gets the error (a ``503`` for each, as alone).

Acceptance order is not affected: requests that are in flight at the same
time have no order between them (docs/api-conventions.md), and a request
is answered only after the commit that recorded it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from shared.services.intake import BatchItem, Outcome

#: Records a group of items in one database transaction and returns their outcomes, in order.
Record = Callable[[Sequence[BatchItem]], list[Outcome]]


class _Request:
    """One request waiting in the committer: its item, then its outcome or error."""

    __slots__ = ("done", "error", "item", "leads", "outcome")

    def __init__(self, item: BatchItem) -> None:
        self.item = item
        self.done = threading.Event()
        self.leads = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None

    def result(self) -> Outcome:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


class GroupCommitter:
    """Record the items that threads submit at about the same time as one group.

    Args:
        record: records a group in one database transaction (``record_transactions``
            inside ``shared.db.transaction``).
        gather_seconds: the longest a leader waits for others when the last
            group had several requests, in seconds (0: never waits).
        group_items_max: the most items one group records.
    """

    def __init__(
        self, record: Record, *, gather_seconds: float, group_items_max: int = 1000
    ) -> None:
        self._record = record
        self._gather_seconds = gather_seconds
        self._group_items_max = group_items_max
        self._condition = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False
        self._last_group_size = 0

    def submit(self, item: BatchItem) -> Outcome:
        """Record ``item`` with whatever else is submitted meanwhile; return its outcome.

        Raises:
            Exception: what recording its group raised (e.g. the database is unreachable).
        """
        request = _Request(item)
        with self._condition:
            self._queue.append(request)
            self._condition.notify()
            leads = not self._leading
            self._leading = True
        if not leads:
            request.done.wait()
            if not request.leads:
                return request.result()
        self._lead()
        return request.result()

    def _lead(self) -> None:
        """Gather, record one group, hand the lead on, and wake the group's requests."""
        with self._condition:
            expected = min(self._last_group_size, self._group_items_max)
            if expected > 1 and self._gather_seconds > 0:
                self._condition.wait_for(
                    lambda: len(self._queue) >= expected, timeout=self._gather_seconds
                )
            group = self._queue[: self._group_items_max]
            del self._queue[: self._group_items_max]
            self._last_group_size = len(group)
        # Requests in flight together have no order, so the group is recorded in
        # key order: two processes' groups that share keys then insert them in
        # the same order, and one waits for the other instead of deadlocking.
        # (sorted is stable: one key's requests keep the order they arrived in.)
        ordered = sorted(group, key=lambda r: (r.item.api_key_id, r.item.idempotency_key))
        try:
            outcomes = self._record([request.item for request in ordered])
        except BaseException as error:  # every request of the group answers it
            for request in group:
                request.error = error
        else:
            for request, outcome in zip(ordered, outcomes, strict=True):
                request.outcome = outcome
        with self._condition:
            if self._queue:
                successor = self._queue[0]
                successor.leads = True
                successor.done.set()
            else:
                self._leading = False
        for request in group:
            request.done.set()
