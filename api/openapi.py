"""The OpenAPI 3.1 document, built from ``app.url_map`` and the pydantic models of each route.

``build_document(app)`` walks the app's routes; for each it reads the entry of
``api.contract.OPERATIONS`` (body, query and answer models, role, problem
statuses) and emits JSON Schema 2020-12 from the same pydantic models the
routes validate requests with and render answers with (``api.render``;
OpenAPI 3.1 uses that dialect). Problems are RFC 9457
``application/problem+json``. ``GET /openapi.json`` serves the document,
``GET /docs`` a Swagger UI viewer whose files come from the installed
``swagger-ui-bundle`` package (no CDN), and ``tally openapi`` writes
``docs/openapi.yaml``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory
from pydantic import BaseModel, TypeAdapter
from werkzeug.routing import Rule

from api.contract import OPERATIONS, UNDOCUMENTED_ENDPOINTS, Answer, Operation
from api.errors import TITLE_BY_STATUS
from api.responses import Problem
from api.schemas import IDEMPOTENCY_KEY_PATTERN
from shared.rendering import Shape

blueprint = Blueprint("openapi", __name__)

#: Statuses any matched route can answer before it runs (``api.edge``), with an example code.
EDGE_PROBLEMS = {
    400: "malformed_request",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
}
#: Statuses every authenticated (``/v1``) route can answer, with an example code.
V1_PROBLEMS = {401: "unauthenticated", 429: "rate_limited", 503: "service_unavailable"}

_DESCRIPTION_BY_STATUS = {
    400: "The body or query string cannot be read (not JSON, not UTF-8, nested too deep), "
    "or a header or cursor is malformed.",
    401: "No API key, or a key Tally does not know or has revoked.",
    403: "The key's role may not make this call (it needs an ops key).",
    404: "Nothing has this id.",
    409: "The resource's state does not allow this.",
    413: "The body is over 64 KiB (1 MiB for a batch).",
    415: "The body is not application/json (UTF-8).",
    422: "The request is well-formed but not valid; `errors` names each field.",
    429: "The key is over its rate limit (RFC 6585); retry after Retry-After seconds.",
    503: "A dependency is unavailable; nothing was recorded. Retry after Retry-After seconds.",
}

_HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "Where the resource is.", "schema": {"type": "string"}},
    "Retry-After": {
        "description": "Seconds to wait before asking again (RFC 9110 section 10.2.3).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Idempotent-Replayed": {
        "description": "`true`: this answers an earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "RateLimit-Limit": {
        "description": "Requests the key may make per window (draft-ietf-httpapi-ratelimit-headers).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the current window ends.",
        "schema": {"type": "integer", "minimum": 0},
    },
}
_RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

_SERVERS = [{"url": "/", "description": "This server."}]
_REF = "#/components/schemas/{model}"
_PATH_PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")


def openapi_path(rule: str) -> str:
    """Return a werkzeug rule as an OpenAPI path: ``/v1/wallets/<wallet_id>`` -> ``{wallet_id}``."""
    return _PATH_PARAMETER.sub(lambda m: "{" + m.group(2) + "}", rule)


def documented_rules(app: Flask) -> list[tuple[str, Rule]]:
    """Return ``(method, rule)`` of every route of ``app`` that the document must describe.

    HEAD and OPTIONS are left out (werkzeug answers them for every GET), and so
    are ``api.contract.UNDOCUMENTED_ENDPOINTS`` (file serving).
    """
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_ENDPOINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, rule))
    return sorted(found, key=lambda pair: (pair[1].rule, pair[0]))


class _Schemas:
    """Collect the JSON Schemas of models into ``components.schemas``, by model name."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, model: Any, mode: str) -> dict[str, Any]:
        """Return a schema (a ``$ref`` for a named model) for a pydantic model or TypeAdapter."""
        adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
        schema = adapter.json_schema(mode=mode, ref_template=_REF)  # type: ignore[arg-type]
        self.components.update(schema.pop("$defs", {}))
        if isinstance(model, type) and issubclass(model, BaseModel):
            self.components[model.__name__] = schema
            return {"$ref": _REF.format(model=model.__name__)}
        return schema


#: The example code of each shared problem status: answered by reference to ``components.responses``.
_SHARED_PROBLEMS = {**EDGE_PROBLEMS, **V1_PROBLEMS, 403: "forbidden"}


def _problem_response(status: int, code: str, schemas: _Schemas) -> dict[str, Any]:
    example = {
        "type": f"/docs/errors#{code}",
        "title": TITLE_BY_STATUS[status],
        "status": status,
        "detail": _DESCRIPTION_BY_STATUS[status],
        "code": code,
    }
    response: dict[str, Any] = {
        "description": _DESCRIPTION_BY_STATUS[status],
        "content": {
            "application/problem+json": {
                "schema": schemas.of(Problem, "serialization"),
                "example": example,
            }  # fmt: skip
        },
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": _header_ref("Retry-After")}
    if status == 429:
        response["headers"] |= {name: _header_ref(name) for name in _RATE_LIMIT_HEADERS}
    return response


def _problem_ref(status: int, code: str, schemas: _Schemas) -> dict[str, Any]:
    """Return a shared problem answer by reference, or a route's own (another example code)."""
    if _SHARED_PROBLEMS.get(status) == code:
        return {"$ref": f"#/components/responses/Problem{status}"}
    return _problem_response(status, code, schemas)


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _answer(answer: Answer, limited: bool, schemas: _Schemas) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description}
    if not answer.media_type:  # no content (204)
        return response
    if answer.model is not None:
        schema = schemas.of(answer.model, "serialization")
    else:
        schema = {"type": "string"}
    example = answer.example
    if example is None and isinstance(answer.model, type) and issubclass(answer.model, Shape):
        example = answer.model.example()
    response["content"] = {answer.media_type: {"schema": schema, "example": example}}
    names = [*answer.headers, *(_RATE_LIMIT_HEADERS if limited else ())]
    if names:
        response["headers"] = {name: _header_ref(name) for name in names}
    if answer.links:
        response["links"] = answer.links
    return response


def _parameters(rule: Rule, operation: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid"},
         "description": "An id; one that is not a UUID names nothing (404)."}
        for name in rule.arguments
    ]  # fmt: skip
    if operation.query is not None:
        schema = operation.query.model_json_schema(mode="validation", ref_template=_REF)
        schemas.components.update(schema.pop("$defs", {}))
        required = set(schema.get("required", ()))
        deep_objects = getattr(operation.query, "deep_objects", ())
        for name, prop in schema["properties"].items():
            parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if name in deep_objects:  # name[key]=value (api.requests.deep_object)
                objects = [p for p in prop.get("anyOf", [prop]) if p.get("type") == "object"]
                description = prop.get("description")
                parameter |= {"style": "deepObject", "explode": True, "schema": objects[0]}
                if description:
                    parameter["description"] = description
            parameters.append(parameter)
    if operation.idempotency_key:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "description": "1..255 visible ASCII characters, unique per request and API "
                "key (draft-ietf-httpapi-idempotency-key-header). The same key and request "
                "again answers 200 with the first transaction; with another request, 422.",
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
            }
        )
    return parameters


def _operation(rule: Rule, operation: Operation, view: Any, schemas: _Schemas) -> dict[str, Any]:
    v1 = rule.rule.startswith("/v1")
    limited = v1  # rate limits apply to the /v1 calls only
    result: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "description": (view.__doc__ or "").strip() if view is not None else "",
        "tags": [operation.tag],
    }
    if operation.role == "none":
        result["security"] = []
    parameters = _parameters(rule, operation, schemas)
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": schemas.of(operation.body, "validation")}},
        }
    answers = {str(a.status): _answer(a, limited, schemas) for a in operation.answers}
    problems = dict(EDGE_PROBLEMS)
    if v1:
        problems |= V1_PROBLEMS
    if operation.role == "ops":
        problems[403] = "forbidden"
    problems |= operation.problems
    for status, code in sorted(problems.items()):
        answers[str(status)] = _problem_ref(status, code, schemas)
    result["responses"] = dict(sorted(answers.items()))
    return result


def contract_drift(app: Flask) -> tuple[set[str], set[str]]:
    """Return ``(endpoints without an OPERATIONS entry, entries without an endpoint)``."""
    served = {rule.endpoint for _, rule in documented_rules(app)}
    return served - OPERATIONS.keys(), OPERATIONS.keys() - served


def build_document(app: Flask, *, strict: bool = False) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of ``app`` as a JSON-serialisable dict.

    Args:
        strict: raise for a route without an ``OPERATIONS`` entry; otherwise it
            is left out (the served document never fails; the drift test is strict).

    Raises:
        KeyError: ``strict`` and a route has no entry in ``api.contract.OPERATIONS``.
    """
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for method, rule in documented_rules(app):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            if strict:
                raise KeyError(f"no OPERATIONS entry for {rule.endpoint} ({method} {rule.rule})")
            continue
        view = app.view_functions.get(rule.endpoint)
        paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = _operation(
            rule, operation, view, schemas
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tally",
            "version": "1.0.0",
            "summary": "An asynchronous wallet transaction processor.",
            "description": "Submit deposits, withdrawals, transfers, holds and groups; each is "
            "recorded pending and applied by a worker to a double-entry ledger. Errors are RFC "
            "9457 problem+json with a machine `code`. Conventions: docs/api-conventions.md.",
        },
        "servers": _SERVERS,
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": name}
            for name in ("Wallets", "Transactions", "Notifications", "Operations", "Health", "Meta")
        ],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `tally keys create` (service or ops role).",
                }
            },
            "headers": _HEADERS,
            "responses": {
                f"Problem{status}": _problem_response(status, code, schemas)
                for status, code in sorted(_SHARED_PROBLEMS.items())
            },
            "schemas": dict(sorted(schemas.components.items())),
        },
    }


@functools.cache
def _swagger_ui_dir() -> Path:
    """Return the directory of Swagger UI's files in the installed ``swagger-ui-bundle``."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@blueprint.get("/openapi.json")
def document() -> Response:
    """Serve this API's OpenAPI 3.1 document (built once per process)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("tally_openapi")
    if cached is None:
        cached = app.extensions["tally_openapi"] = build_document(app)
    return jsonify(cached)


_VIEWER_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tally API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/tally-docs.js"></script>
</body></html>
"""
_VIEWER_SCRIPT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, persistAuthorization: false});
"""


@blueprint.get("/docs")
def viewer() -> Response:
    """Serve Swagger UI on ``/openapi.json``, from files of the installed package (no CDN)."""
    response = Response(_VIEWER_PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    )
    return response


@blueprint.get("/docs/<path:filename>")
def viewer_asset(filename: str) -> Response:
    """Serve one of Swagger UI's files (or the page's own start script)."""
    if filename == "tally-docs.js":
        return Response(_VIEWER_SCRIPT, mimetype="text/javascript")
    return send_from_directory(_swagger_ui_dir(), filename, max_age=3600)
