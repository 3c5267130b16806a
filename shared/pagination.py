"""Opaque keyset cursors for list endpoints (newest first).

A cursor encodes the sort key of the last row returned; the next page starts
strictly after it. Clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.ledger.errors import ValidationFailed


def encode_cursor(*key: Any) -> str:
    """Return an opaque, URL-safe cursor for the sort key ``key`` (JSON-serialisable parts)."""
    raw = json.dumps([str(part) for part in key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str]:
    """Return the ``parts`` strings encoded by :func:`encode_cursor`.

    Raises:
        ValidationFailed: the cursor is not one Tally issued (code ``invalid_cursor``).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise _invalid() from error
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(p, str) for p in key):
        raise _invalid()
    return key


def _invalid() -> ValidationFailed:
    return ValidationFailed(
        "cursor is not valid; pass the next_cursor of a previous page",
        code="invalid_cursor",
        errors=[{"field": "cursor", "message": "not a cursor this API issued"}],
    )


def created_before(
    created_at: InstrumentedAttribute[dt.datetime],
    id_: InstrumentedAttribute[uuid.UUID],
    cursor: str,
) -> ColumnElement[bool]:
    """Return the SQL condition ``(created_at, id) < cursor's key`` for a newest-first page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    created, last_id = decode_cursor(cursor, 2)
    try:
        key = (dt.datetime.fromisoformat(created), uuid.UUID(last_id))
    except ValueError as error:
        raise _invalid() from error
    return tuple_(created_at, id_) < tuple_(*key)


def created_cursor(created_at: dt.datetime, id_: uuid.UUID) -> str:
    """Return the cursor of a row in a ``(created_at, id)`` newest-first order."""
    return encode_cursor(created_at.isoformat(), id_)


def newest_first_page(
    session: Session,
    query: Select[Any],
    *,
    created_at: InstrumentedAttribute[dt.datetime],
    id_: InstrumentedAttribute[uuid.UUID],
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Return one page of ``query``'s entities, newest first by ``(created_at, id)``, and the next cursor.

    Args:
        query: a ``select`` of one entity, already filtered.
        created_at, id_: the entity's sort columns.
        limit: page size, 1..200.
        cursor: a ``next_cursor`` from the previous page, or None for the first.

    Returns:
        ``(rows, next_cursor)``; ``next_cursor`` is None on the last page.

    Raises:
        ValidationFailed: ``invalid_cursor``.
    """
    query = query.order_by(created_at.desc(), id_.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(created_before(created_at, id_, cursor))
    rows = list(session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, created_cursor(getattr(last, created_at.key), getattr(last, id_.key))
