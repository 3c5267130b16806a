"""Helpers that read a request: its JSON body, its query string, a path id.

Every route reads its input through these. By the time a route runs, the edge
(``api.edge``) has already refused a body or query string that is too large,
not JSON, not UTF-8, nested too deep, or holds text PostgreSQL cannot store.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from api.edge import MalformedRequest, request_json
from api.errors import pydantic_errors
from shared.ledger.errors import NotFound, ValidationFailed

M = TypeVar("M", bound=BaseModel)

#: The ``[key]`` of a deep-object query parameter: one key, not empty, no brackets.
_DEEP_OBJECT_KEY = re.compile(r"\[([^\[\]]+)\]")


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

    A parameter the model lists in ``deep_objects`` is read from
    ``name[key]=value`` pairs (OpenAPI ``style: deepObject``) into a dict
    (:func:`deep_object`); errors name it as sent (``metadata[source]``).

    Raises:
        ValidationFailed: 422 ``validation_failed``, one error per parameter.
    """
    args: dict[str, Any] = request.args.to_dict()
    deep_objects: tuple[str, ...] = getattr(model, "deep_objects", ())
    for name in deep_objects:
        args.pop(name, None)
        pairs = deep_object(name)
        if pairs:
            args[name] = pairs
    try:
        return model.model_validate(args)
    except ValidationError as error:
        errors = pydantic_errors(error)
        for item in errors:
            name, _, key = item["field"].partition(".")
            if name in deep_objects and key:
                item["field"] = f"{name}[{key.removesuffix('.[key]')}]"
        raise ValidationFailed("the query string is not valid", errors=errors) from None


def deep_object(name: str) -> dict[str, str]:
    """Return the ``name[key]=value`` parameters of the query string as ``{key: value}``.

    Every such parameter is consumed: ``name`` alone, a key that is empty or
    holds a bracket (``name[a][b]``), or a key given twice is refused, naming
    the parameter as sent.

    Raises:
        ValidationFailed: 422 ``validation_failed``, one error per bad parameter.
    """
    pairs: dict[str, str] = {}
    errors: list[dict[str, str]] = []
    for parameter, values in request.args.lists():
        if parameter != name and not parameter.startswith(f"{name}["):
            continue
        match = _DEEP_OBJECT_KEY.fullmatch(parameter.removeprefix(name))
        if match is None:
            message = f"use {name}[KEY]=VALUE, KEY without brackets"
            errors.append({"field": parameter, "message": message})
        elif len(values) > 1:
            errors.append({"field": parameter, "message": "given more than once"})
        else:
            pairs[match.group(1)] = values[0]
    if errors:
        raise ValidationFailed("the query string is not valid", errors=errors)
    return pairs


def path_id(value: str, *, not_found_code: str) -> uuid.UUID:
    """Parse a UUID from the path; an id that is not a UUID names nothing, so 404.

    Raises:
        NotFound: with ``not_found_code`` (``wallet_not_found``, ...).
    """
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{value!r} is not an id of this API", code=not_found_code) from None
