"""The edge of the API: every request's query string and body are checked before a route runs.

One ``before_request`` hook (``install_edge``) refuses what no route should
see, whatever the route:

- a body over ``BODY_BYTES_MAX`` (413 ``payload_too_large``), refused before it
  is read whole, chunked bodies included; a view marked with :func:`body_limit`
  has a limit of its own;
- a body whose ``Content-Type`` is not JSON (415 ``unsupported_media_type``);
- a body that is not JSON (invalid UTF-8 or syntax, RFC 8259) or is nested
  deeper than ``JSON_DEPTH_MAX`` (400 ``malformed_request``);
- a query string that is not UTF-8 once percent-decoded (400 ``malformed_request``);
- a string anywhere in the body (keys and values) or the query string (names
  and values) that PostgreSQL ``text`` cannot store, or a query value longer
  than ``QUERY_VALUE_CHARS_MAX`` (422 ``validation_failed``, each field named).

The parsed body, or the error that refused it, is kept for
``api.requests.json_body()``, the one reader of request bodies.

A batch (``POST /v1/transactions/batch``) refuses its items one by one: its
view is marked ``strings_checked_by_route``, so the edge leaves the strings of
its body to the route, which checks each item with :func:`check_strings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import orjson
from flask import Flask, current_app, g, request
from werkzeug.exceptions import HTTPException

from shared.ledger.errors import TallyError, ValidationFailed

#: The largest body accepted, in bytes. A transaction with 50 metadata values of
#: 500 characters is about 27 KB; a group of 50 legs about 10 KB.
BODY_BYTES_MAX = 64 * 1024
#: The deepest nesting of arrays and objects accepted. The deepest legitimate
#: body, a group's legs (object > array > object), has depth 3.
JSON_DEPTH_MAX = 16
#: The longest query parameter value accepted, in characters (a cursor is at most 512).
QUERY_VALUE_CHARS_MAX = 1024
#: At most this many per-field errors are listed, so a body full of bad strings
#: does not get an answer larger than itself.
FIELD_ERRORS_MAX = 20

# ``g`` attribute holding the parsed body (or the error that refused it), set once read.
_BODY_ATTRIBUTE = "tally_json_body"
# View function attributes set by ``body_limit``.
_BYTES_MAX_ATTRIBUTE = "tally_body_bytes_max"
_STRINGS_ATTRIBUTE = "tally_strings_checked_by_route"

F = TypeVar("F", bound=Callable[..., Any])


class MalformedRequest(TallyError):
    """The body or query string cannot be read: not JSON, not UTF-8, or nested too deep (400)."""

    code = "malformed_request"


class UnsupportedMediaType(TallyError):
    """The body's ``Content-Type`` is not JSON (415)."""

    code = "unsupported_media_type"


class PayloadTooLarge(TallyError):
    """The body is larger than ``BODY_BYTES_MAX`` (413)."""

    code = "payload_too_large"


def body_limit(bytes_max: int, *, strings_checked_by_route: bool = False) -> Callable[[F], F]:
    """Give a view a body limit of its own, in bytes, instead of ``BODY_BYTES_MAX``.

    Args:
        bytes_max: the largest body the view accepts, in bytes.
        strings_checked_by_route: leave the check of the body's strings
            (:func:`check_strings`) to the view, which applies it per item.
    """

    def mark(view: F) -> F:
        setattr(view, _BYTES_MAX_ATTRIBUTE, bytes_max)
        setattr(view, _STRINGS_ATTRIBUTE, strings_checked_by_route)
        return view

    return mark


def largest_body_limit(app: Flask) -> int:
    """Return the largest body, in bytes, that any of ``app``'s views accepts (:func:`body_limit`)."""
    views = app.view_functions.values()
    return max([BODY_BYTES_MAX, *(getattr(view, _BYTES_MAX_ATTRIBUTE, 0) for view in views)])


def _view_option(name: str, default: Any) -> Any:
    """Return an option :func:`body_limit` set on the current request's view, or ``default``."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, name, default)


def install_edge(app: Flask) -> None:
    """Make ``app`` check every request's query string and body before its route runs.

    Args:
        app: the Flask app. Call this after registering authentication's
            ``before_request``, so that an unauthenticated client is answered
            401 without its body being read (Flask runs them in order).
    """
    # werkzeug's own limit is a backstop for any other reader of the body
    # (``_read_body`` raises it for a view with a larger limit). It is one byte
    # above ours because its capped stream reads as if a chunked
    # body ended at the cap (werkzeug ``LimitedStream.readall``); reading one
    # byte past our limit is how ``_read_body`` tells "too large" from "exactly
    # the limit".
    app.config["MAX_CONTENT_LENGTH"] = BODY_BYTES_MAX + 1
    app.before_request(check_request)


def check_request() -> None:
    """Check the current request's query string and body; keep the parsed body in ``g``.

    A request that matched no route is left alone, so that it answers 404 or 405.

    Raises:
        MalformedRequest, UnsupportedMediaType, PayloadTooLarge, ValidationFailed:
            as listed in this module's docstring.
    """
    if request.routing_exception is not None:
        return
    check_query_string(request.query_string)
    request_json()


def request_json() -> Any:
    """Return the current request's body parsed as JSON, or ``None`` when it has no body.

    Reads and parses once per request and keeps the result, or the error that
    refused the body, in ``g``: the rate limit may read a body before the edge
    (``api.limits.costs``), and the stream can be read only once.

    Raises:
        MalformedRequest, UnsupportedMediaType, PayloadTooLarge, ValidationFailed:
            as listed in this module's docstring.
    """
    if _BODY_ATTRIBUTE not in g:
        try:
            raw = _read_body()
            checked = not _view_option(_STRINGS_ATTRIBUTE, False)
            value: Any = None if raw is None else parse_json(raw, strings_checked=checked)
        except (TallyError, HTTPException) as error:
            value = error
        setattr(g, _BODY_ATTRIBUTE, value)
    value = getattr(g, _BODY_ATTRIBUTE)
    if isinstance(value, TallyError | HTTPException):
        raise value
    return value


def parse_json(raw: bytes, *, strings_checked: bool = True) -> Any:
    """Parse ``raw`` as a JSON text and check every container and string in it.

    Args:
        raw: the body, at most its view's limit in bytes.
        strings_checked: apply :func:`check_strings` to the parsed value (False:
            its reader applies it to each part it refuses on its own).

    Returns:
        The parsed value (``dict``, ``list``, ``str``, number, bool or ``None``).

    Raises:
        MalformedRequest: not UTF-8 or not JSON (RFC 8259 sections 2 and 8.1;
            orjson also refuses a lone surrogate escape such as ``"\\ud800"``),
            or nested deeper than ``JSON_DEPTH_MAX``.
        ValidationFailed: a key or string value PostgreSQL text cannot store,
            each named by its dotted path (``metadata.note``, ``legs.0.amount``).
    """
    try:
        # orjson has no Python recursion: a 50,000-deep body fails with a clean
        # error at its own depth limit (1024) instead of a RecursionError.
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"the body is not valid JSON (RFC 8259): {error}") from None
    if strings_checked:
        check_strings(value)
    return value


def check_strings(value: Any) -> None:
    """Check every container and string of a parsed JSON value, as the edge checks a body.

    Raises:
        MalformedRequest: nested deeper than ``JSON_DEPTH_MAX`` (``value`` is depth 1).
        ValidationFailed: a key or string value PostgreSQL text cannot store,
            each named by its dotted path from ``value``.
    """
    errors = _walk(value)
    if errors:
        raise ValidationFailed("the request body is not valid", errors=errors)


def check_query_string(raw: bytes) -> None:
    """Check every parameter of a raw query string: UTF-8, storable, not over-long.

    werkzeug keeps an invalid percent escape such as ``%FF`` as its literal text
    and fails on raw non-UTF-8 bytes, so the raw bytes are checked here, split
    as ``urllib.parse.parse_qsl`` splits them (``&``, ``=``, ``+`` for space).

    Args:
        raw: the query string as sent, without ``?``.

    Raises:
        MalformedRequest: a name or value is not UTF-8 after percent-decoding
            (RFC 3986 section 2.5); ``errors`` names each parameter.
        ValidationFailed: a name or value PostgreSQL text cannot store, or a
            value over ``QUERY_VALUE_CHARS_MAX`` characters.
    """
    undecodable: list[dict[str, str]] = []
    invalid: list[dict[str, str]] = []
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name_bytes = unquote_to_bytes(raw_name.replace(b"+", b" "))
        value_bytes = unquote_to_bytes(raw_value.replace(b"+", b" "))
        try:
            name, value = name_bytes.decode(), value_bytes.decode()
        except UnicodeDecodeError:
            field = name_bytes.decode(errors="replace")
            undecodable.append({"field": field, "message": "is not UTF-8 once percent-decoded"})
            continue
        problem = unstorable_reason(name) or unstorable_reason(value)
        if problem is None and len(value) > QUERY_VALUE_CHARS_MAX:
            problem = f"is longer than {QUERY_VALUE_CHARS_MAX} characters"
        if problem is not None:
            invalid.append({"field": name, "message": problem})
    if undecodable:
        raise MalformedRequest(
            "the query string is not UTF-8", errors=undecodable[:FIELD_ERRORS_MAX]
        )
    if invalid:
        raise ValidationFailed("the query string is not valid", errors=invalid[:FIELD_ERRORS_MAX])


def unstorable_reason(text: str) -> str | None:
    """Return why PostgreSQL ``text`` cannot store ``text``, or ``None`` if it can.

    PostgreSQL text cannot contain NUL (docs, "Character Types"), and a lone
    surrogate (U+D800..U+DFFF) has no UTF-8 encoding (RFC 3629 section 3).
    """
    if "\x00" in text:
        return "contains NUL (U+0000), which PostgreSQL text cannot store"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "contains a lone surrogate (U+D800..U+DFFF), which is not valid UTF-8"
    return None


def _walk(root: Any) -> list[dict[str, str]]:
    """Visit every value of a parsed JSON text once, with an explicit stack (no recursion).

    Returns ``[{"field", "message"}]`` for keys and strings PostgreSQL cannot
    store, in document order, at most ``FIELD_ERRORS_MAX``.

    Raises:
        MalformedRequest: a container deeper than ``JSON_DEPTH_MAX``.
    """
    errors: list[dict[str, str]] = []
    # (value, path to it, its depth if it is a container: the root is depth 1)
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(root, (), 1)]
    while stack and len(errors) < FIELD_ERRORS_MAX:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list) and depth > JSON_DEPTH_MAX:
            raise MalformedRequest(
                f"the body is nested deeper than {JSON_DEPTH_MAX} arrays and objects"
            )
        if isinstance(value, dict):
            # Pushed in reverse so that they are popped, and reported, in document order.
            for key, item in reversed(value.items()):
                reason = unstorable_reason(key)
                if reason is not None:
                    errors.append({"field": _dotted((*path, key)), "message": f"name {reason}"})
                stack.append((item, (*path, key), depth + 1))
        elif isinstance(value, list):
            stack.extend((value[i], (*path, i), depth + 1) for i in reversed(range(len(value))))
        elif isinstance(value, str):
            reason = unstorable_reason(value)
            if reason is not None:
                errors.append({"field": _dotted(path), "message": reason})
    return errors[:FIELD_ERRORS_MAX]


def _dotted(path: tuple[str | int, ...]) -> str:
    """Render a path as the ``field`` of an error: ``legs.0.amount``; the root is ``body``."""
    return ".".join(str(part) for part in path) or "body"


def _read_body() -> bytes | None:
    """Return the request body, or ``None`` when the request has none.

    Raises:
        UnsupportedMediaType: a body whose ``Content-Type`` is not JSON.
        PayloadTooLarge: a body over its view's limit, declared or streamed.
    """
    declared_bytes = request.content_length  # None for a chunked body (RFC 9112 section 6.3)
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not chunked and not declared_bytes:
        return None  # no Content-Length and no chunked coding: no body (RFC 9112 section 6.3)
    if not is_json_media_type(request.mimetype, request.mimetype_params):
        sent = request.headers.get("Content-Type", "none")
        raise UnsupportedMediaType(f"the body must be application/json (UTF-8), not {sent!r}")
    bytes_max: int = _view_option(_BYTES_MAX_ATTRIBUTE, BODY_BYTES_MAX)
    if declared_bytes is not None and declared_bytes > bytes_max:
        raise PayloadTooLarge(f"the body is larger than {bytes_max} bytes")
    request.max_content_length = bytes_max + 1  # werkzeug's backstop, as install_edge says
    stream = request.stream
    chunks: list[bytes] = []
    read_bytes = 0
    # Read at most one byte past the limit: enough to know a chunked body is too large.
    while read_bytes <= bytes_max:
        chunk = stream.read(bytes_max + 1 - read_bytes)
        if not chunk:
            break
        chunks.append(chunk)
        read_bytes += len(chunk)
    if read_bytes > bytes_max:
        raise PayloadTooLarge(f"the body is larger than {bytes_max} bytes")
    return b"".join(chunks) or None


def is_json_media_type(mimetype: str, params: dict[str, str]) -> bool:
    """Return whether a (lower-cased, parameter-free) media type names JSON in UTF-8.

    ``application/json`` and any ``application/*+json`` structured syntax
    suffix (RFC 6839 section 3.1) are JSON. JSON is UTF-8 (RFC 8259 section
    8.1); a ``charset`` parameter naming anything else is refused.
    """
    is_json = mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )
    charset = params.get("charset", "utf-8").lower()
    return is_json and charset in {"utf-8", "utf8"}
