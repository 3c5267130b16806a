"""The smallest apply stream: the floor apps' rows applied in acceptance order, in batches.

``python -m bench.floor.apply_loop WALLETS_FILE`` prepares the floor database
(``FLOOR_DATABASE_URL``) and then applies, until killed, every row that
``bench.floor.same_work`` records, in the order of its ``seq`` (a sequence
default, as Tally's ``lane_sequence``): one database transaction per batch of
the oldest pending rows (at most ``FLOOR_BATCH`` of them, 1,000 by default),
which locks the batch's wallets in sorted order, decides each transfer in
Python in order (funds or ``failed``), and writes the ledger entries, the
balances and the statuses with one ``unnest`` statement each. An empty
stream is polled every millisecond. This is the apply half of the
end-to-end floor (``bench/floor/end_to_end.sh``); it leaves out what Tally's
apply stream adds for faults: the claim and its attempt count, the advisory
lock, the events, the drain messages and the announcements.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg

DATABASE_URL = os.environ.get("FLOOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:54329/floor")
BATCH = int(os.environ.get("FLOOR_BATCH", "1000"))

_SCHEMA = """
DROP TABLE IF EXISTS floor_t, floor_entry, floor_wallet;
CREATE TABLE floor_wallet (id uuid PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE floor_t (
    id uuid PRIMARY KEY, body jsonb, created_at timestamptz DEFAULT now(),
    seq bigserial, status text NOT NULL DEFAULT 'pending', applied_at timestamptz);
CREATE INDEX floor_t_pending ON floor_t (seq) WHERE status = 'pending';
CREATE TABLE floor_entry (transaction_id uuid NOT NULL, wallet_id uuid NOT NULL, amount bigint NOT NULL);
"""

_HEAD = """
SELECT id, (body->>'source_wallet_id')::uuid, (body->>'destination_wallet_id')::uuid,
    (body->>'amount_minor')::bigint
FROM floor_t WHERE status = 'pending' ORDER BY seq LIMIT %s
"""


def prepare(connection: psycopg.Connection, wallets: list[str]) -> None:
    """Create the floor's tables anew and fund each wallet with 10^12 minor units."""
    connection.execute(_SCHEMA)
    connection.execute(
        "INSERT INTO floor_wallet SELECT unnest(%s::uuid[]), 1000000000000", (wallets,)
    )
    connection.commit()


def apply_once(connection: psycopg.Connection) -> int:
    """Apply the oldest pending rows as one database transaction; return how many."""
    rows = connection.execute(_HEAD, (BATCH,)).fetchall()
    if not rows:
        connection.rollback()
        return 0
    touched = sorted({w for _, source, destination, _ in rows for w in (source, destination)})
    balances = dict(
        connection.execute(
            "SELECT id, balance FROM floor_wallet WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            (touched,),
        ).fetchall()
    )
    before = dict(balances)
    entry_ids, entry_wallets, entry_amounts, ids, statuses = [], [], [], [], []
    for transaction_id, source, destination, amount in rows:
        ids.append(transaction_id)
        if balances[source] < amount:
            statuses.append("failed")
            continue
        balances[source] -= amount
        balances[destination] += amount
        entry_ids += [transaction_id, transaction_id]
        entry_wallets += [source, destination]
        entry_amounts += [-amount, amount]
        statuses.append("completed")
    changed = [w for w in touched if balances[w] != before[w]]
    connection.execute(
        "INSERT INTO floor_entry SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[])",
        (entry_ids, entry_wallets, entry_amounts),
    )
    connection.execute(
        "UPDATE floor_wallet w SET balance = d.balance"
        " FROM unnest(%s::uuid[], %s::bigint[]) AS d(id, balance) WHERE w.id = d.id",
        (changed, [balances[w] for w in changed]),
    )
    connection.execute(
        "UPDATE floor_t t SET status = d.status, applied_at = clock_timestamp()"
        " FROM unnest(%s::uuid[], %s::text[]) AS d(id, status) WHERE t.id = d.id",
        (ids, statuses),
    )
    connection.commit()
    return len(rows)


def main() -> None:
    """Prepare the tables for the wallets in ``sys.argv[1]``, then apply until killed."""
    wallets = Path(sys.argv[1]).read_text().split()
    with psycopg.connect(DATABASE_URL) as connection:
        prepare(connection, wallets)
        print("ready", flush=True)
        while True:
            if not apply_once(connection):
                time.sleep(0.001)


if __name__ == "__main__":
    main()
