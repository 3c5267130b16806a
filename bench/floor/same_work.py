"""The floor app plus, stage by stage, the per-request work a Tally submission does.

Each stage is one concern of ``POST /v1/transactions`` done with the library
Tally uses for it, in the fewest lines; ``FLOOR_STAGES`` (a comma-separated
subset, default all) picks the stages, so ``measure.sh`` can price each one:

- ``auth``: ``Authorization: Bearer``, its SHA-256 and a hit in an in-memory
  cache of known keys (``api.auth``: one lookup per key and second);
- ``limits``: limits' fixed window in process memory, keyed by the key, and
  its ``RateLimit-*`` headers (``api.limits``);
- ``flask-limiter``: instead of ``limits``, the same limit as flask-limiter's
  application limit (what ``api.limits`` used before series 10);
- ``validate``: a pydantic model of the transfer body, the amount turned into
  minor units (``api.schemas``);
- ``render``: the answer as a pydantic model of a transaction's 17 fields,
  written by ``model_dump_json`` (``shared.rendering``);
- ``log``: a request id and one structlog JSON line per request (``api.observe``);
- ``metrics``: one prometheus-client histogram observation by method, route
  and status (``api.observe``).

The database work stays the floor's: one ``INSERT`` and its commit per request
(Tally shares both among concurrent requests, ``shared.services.group_commit``).
Served as ``bench.floor.servers:same_work`` (Tally's thread pool under
uvicorn) or directly as a WSGI app (``bench.floor.same_work:app``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import os
import sys
import time
import uuid
from typing import Literal

import structlog
from flask import Flask, Response, g, request
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from prometheus_client import Histogram
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field

DATABASE_URL = os.environ.get("FLOOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:54329/floor")
STAGES = set(
    os.environ.get("FLOOR_STAGES", "auth,limits,validate,render,log,metrics").split(",")
) - {""}
KEY = "floor-key"

pool = ConnectionPool(DATABASE_URL, min_size=8, max_size=16, open=True)
app = Flask(__name__)
known_keys = {hashlib.sha256(KEY.encode()).hexdigest(): uuid.uuid4()}
duration = Histogram("floor_request_seconds", "Request time.", ["method", "route", "status"])
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    cache_logger_on_first_use=True,
)
log = structlog.get_logger("floor")


class TransferIn(BaseModel):
    """A transfer as the API takes it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["transfer"]
    source_wallet_id: uuid.UUID
    destination_wallet_id: uuid.UUID
    amount: str = Field(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class TransactionOut(BaseModel):
    """A transaction as the API answers it."""

    id: uuid.UUID
    type: str
    status: str
    amount: str
    currency: str
    source_wallet_id: uuid.UUID | None
    destination_wallet_id: uuid.UUID | None
    reversed_amount: str
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None
    scheduled_at: dt.datetime | None


@app.before_request
def begin() -> Response | None:
    """Authenticate the request and give it an id, as the stages ask."""
    g.started = time.perf_counter()
    if "log" in STAGES:
        g.request_id = str(uuid.uuid4())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)
    if "auth" in STAGES:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        g.key_id = known_keys.get(hashlib.sha256(secret.strip().encode()).hexdigest())
        if scheme.lower() != "bearer" or g.key_id is None:
            return Response('{"code":"unauthenticated"}', 401, mimetype="application/json")
    return None


if "limits" in STAGES:
    limiter = FixedWindowRateLimiter(MemoryStorage())
    limit = parse_many("20000/second")[0]

    @app.before_request
    def count() -> Response | None:
        """Count the request against its key's limit (429 once spent); keep its window for the headers."""
        if not limiter.hit(limit, str(g.get("key_id"))):
            return Response('{"code":"rate_limited"}', 429, mimetype="application/json")
        g.window = limiter.get_window_stats(limit, str(g.get("key_id")))
        return None


if "flask-limiter" in STAGES:
    from flask_limiter import ApplicationLimit, Limiter  # the bench extra installs it

    Limiter(
        key_func=lambda: str(g.get("key_id")),
        application_limits=[ApplicationLimit(limit_provider=lambda: "20000/second")],
        storage_uri="memory://",
        strategy="fixed-window",
        headers_enabled=False,
    ).init_app(app)


@app.after_request
def finish(response: Response) -> Response:
    """Time the request into the histogram and log its access line, as the stages ask."""
    elapsed = time.perf_counter() - g.started
    window = g.get("window")
    if window is not None:  # the limit's fields, as api.limits writes them
        response.headers["RateLimit-Limit"] = str(limit.amount)
        response.headers["RateLimit-Remaining"] = str(window.remaining)
        response.headers["RateLimit-Reset"] = str(
            max(0, math.ceil(window.reset_time - time.time()))
        )
    if "metrics" in STAGES:
        duration.labels(request.method, "/t", str(response.status_code)).observe(elapsed)
    if "log" in STAGES:
        response.headers["X-Request-Id"] = g.request_id
        log.info("request", method=request.method, route="/t", status=response.status_code,
                 duration_ms=round(elapsed * 1000, 3))  # fmt: skip
    return response


@app.post("/t")
@app.post("/v1/transactions")  # where bench.floor.generator posts
def submit() -> Response:
    """Record the body as one row and answer 202 with the transaction."""
    body = request.get_json()
    if "validate" in STAGES:
        transfer = TransferIn.model_validate(body)
        minor_units = int(decimal.Decimal(transfer.amount) * 100)
        body = {**body, "amount_minor": minor_units}
    transaction_id = uuid.uuid4()
    with pool.connection() as connection:
        inserted = connection.execute(
            "INSERT INTO floor_t (id, body) VALUES (%s, %s) RETURNING created_at",
            (transaction_id, json.dumps(body)),
        ).fetchone()
    assert inserted is not None
    created_at = inserted[0]
    if "render" not in STAGES:
        document = json.dumps({"id": str(transaction_id), "status": "pending"})
        return Response(document, 202, mimetype="application/json")
    answer = TransactionOut(
        id=transaction_id, type="transfer", status="pending", amount=body["amount"],
        currency=body["currency"], source_wallet_id=body["source_wallet_id"],
        destination_wallet_id=body["destination_wallet_id"], reversed_amount="0.00",
        description=None, metadata={}, failure_code=None, failure_message=None, attempts=0,
        created_at=created_at, updated_at=created_at, completed_at=None, scheduled_at=None,
    )  # fmt: skip
    headers = {"Location": f"/v1/transactions/{transaction_id}", "Retry-After": "1"}
    return Response(answer.model_dump_json(), 202, headers, mimetype="application/json")
