"""A minimal submission endpoint: parse the JSON body, one INSERT, commit, answer 202.

``FLOOR_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:54329/floor``)
names a database with ``CREATE TABLE floor_t (id uuid PRIMARY KEY, body jsonb,
created_at timestamptz DEFAULT now())``; ``measure.sh`` creates both.
"""

from __future__ import annotations

import json
import os
import uuid

from flask import Flask, Response, request
from psycopg_pool import ConnectionPool

DATABASE_URL = os.environ.get("FLOOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:54329/floor")

pool = ConnectionPool(DATABASE_URL, min_size=8, max_size=8, open=True)
app = Flask(__name__)


@app.post("/t")
def submit() -> Response:
    """Record the body as one row and answer 202 with its id."""
    body = request.get_json()
    transaction_id = uuid.uuid4()
    with pool.connection() as connection:
        connection.execute(
            "INSERT INTO floor_t (id, body) VALUES (%s, %s)", (transaction_id, json.dumps(body))
        )
    document = json.dumps({"id": str(transaction_id), "status": "pending"})
    return Response(document, 202, mimetype="application/json")
