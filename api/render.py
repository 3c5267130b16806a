"""Answers rendered through the response shapes (``api.responses``), exactly as docs/api.md describes.

The shape that documents a response in the OpenAPI document is the one that
renders it here, so the two cannot differ. Pydantic writes the JSON text
(``model_dump_json``): no dict in between and no second encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Response

from api.responses import page_of
from shared.rendering import Shape

__all__ = ["answer", "page"]


def answer(
    shape: type[Shape],
    row: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> Response:
    """Return ``row`` rendered as ``shape``, as an ``application/json`` response.

    Args:
        shape: the response model, e.g. ``api.responses.Wallet``.
        row: what it reads (an ORM object, anything with its attributes, or a dict).
        status: the HTTP status.
        headers: response headers (``Location``, ``Retry-After``...).
        context: passed to the shape's serializers (a ledger entry's ``currency``).
    """
    return Response(shape.render(row, **context), status, headers, mimetype="application/json")


def page(
    shape: type[Shape], rows: Iterable[Any], next_cursor: str | None, **context: Any
) -> Response:
    """Return a list page: ``{"data": [shape...], "next_cursor": str | None}`` (200)."""
    return answer(page_of(shape), {"data": rows, "next_cursor": next_cursor}, **context)
