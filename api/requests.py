"""Helpers that read a request: its JSON body, its query string, a path id.

Every route reads its input through these. By the time a route runs, the edge
(``api.edge``) has already refused a body or query string that is too large,
not JSON, not UTF-8, nested too deep, or holds text PostgreSQL cannot store.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from api.edge import MalformedRequest, request_json
from api.errors import pydantic_errors
from shared.ledger.errors import NotFound, ValidationFailed

M = TypeVar("M", bound=BaseModel)


def json_body() -> dict[str, Any]:
    """Return the request body parsed as a JSON object.

    Raises:
        MalformedRequest: the body is empty, not JSON, nested too deep, or not an object.
        UnsupportedMediaType, PayloadTooLarge, ValidationFailed: see ``api.edge``.
    """
    body = request_json()
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


def json_body_or_empty() -> dict[str, Any]:
    """Return the request body as a JSON object, or ``{}`` when the request has none.

    Raises:
        MalformedRequest: a body that is not a JSON object.
    """
    body = request_json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object")
    return body


def query(model: type[M]) -> M:
    """Validate the query string with ``model``.

    Raises:
        ValidationFailed: 422 ``validation_failed``, one error per parameter.
    """
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as error:
        raise ValidationFailed(
            "the query string is not valid", errors=pydantic_errors(error)
        ) from None


def path_id(value: str, *, not_found_code: str) -> uuid.UUID:
    """Parse a UUID from the path; an id that is not a UUID names nothing, so 404.

    Raises:
        NotFound: with ``not_found_code`` (``wallet_not_found``, ...).
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{value!r} is not an id of this API", code=not_found_code) from None
