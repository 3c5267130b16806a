"""Opaque keyset cursors for list endpoints (newest first).

A cursor encodes the sort key of the last row returned; the next page starts
strictly after it. Clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

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
