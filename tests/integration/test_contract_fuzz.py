"""Schemathesis on every operation of the OpenAPI document, in-process, on the real servers.

The app is called through schemathesis' WSGI support (no server, no network)
and reaches the session's PostgreSQL and Redis like every other test. For
each operation, hypothesis draws ``FUZZ_EXAMPLES`` requests (20 by default)
from the document's schemas, derandomized and with no example database, so
the run is the same every time; an operation that takes free text (a string
parameter or body field the document does not confine to an enum, a format
or a narrow pattern: URLs, descriptions, owner refs, cursors) gets
``FUZZ_FREE_TEXT_EXAMPLES`` (100), because the inputs that break text
handling (a URL whose host IDNA cannot encode, answered 500 until URLs were
parsed by ``webhook_sender.receiver_url``) are a small share of any draw.
``make fuzz`` sets ``FUZZ_RANDOM=1`` and more examples for a longer random
run. Every answer is checked:

- ``not_a_server_error``: never a 5xx;
- ``status_code_conformance``, ``content_type_conformance``,
  ``response_headers_conformance``, ``response_schema_conformance``: every
  answer is one the document lists, in the media type, with the headers and
  the body schema it lists;
- ``problem_json_for_4xx`` (below): every 4xx is RFC 9457 problem+json whose
  ``status`` is the answer's.

A second test sends each operation's requests without a key: every ``/v1``
call must answer 401. ``TestContractWorkflows`` follows the document's links
(a created wallet to its reads, a submitted transaction to its read) for a
few steps per example, with the same checks.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app

#: Examples per operation; ``make fuzz`` raises it.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
#: Examples per operation that takes free text (never fewer than ``EXAMPLES``).
FREE_TEXT_EXAMPLES = max(EXAMPLES, int(os.environ.get("FUZZ_FREE_TEXT_EXAMPLES", "100")))
#: ``make fuzz`` draws new examples each run; ``make test`` the same ones every time.
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"

APP = create_app({"TESTING": True})
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


def _is_free_text(node: Any, components: dict[str, Any]) -> bool:
    """Tell whether a JSON schema holds a string that may be any text (no enum, format, or
    pattern narrower than "non-space characters")."""
    if isinstance(node, list):
        return any(_is_free_text(item, components) for item in node)
    if not isinstance(node, dict):
        return False
    if "$ref" in node:
        return _is_free_text(components[node["$ref"].rsplit("/", 1)[-1]], components)
    if node.get("type") == "string" and not {"enum", "const", "format"} & node.keys():
        pattern = node.get("pattern", "")
        if not pattern or "\\S" in pattern or "." in pattern:
            return True
    return any(_is_free_text(value, components) for value in node.values())


def _free_text_operations() -> set[tuple[str, str]]:
    """Return ``(METHOD, path)`` of every operation with a free-text parameter or body."""
    document = APP.test_client().get("/openapi.json").get_json()
    components = document.get("components", {}).get("schemas", {})
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict)
        and _is_free_text(
            [operation.get("parameters", []), operation.get("requestBody", {})], components
        )
    }


FREE_TEXT = _free_text_operations()


def _takes_free_text(ctx: Any) -> bool:
    return (ctx.operation.method.upper(), ctx.operation.path) in FREE_TEXT


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@schemathesis.check
def problem_json_for_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """Fail unless a 4xx answer is ``application/problem+json`` with its own status (RFC 9457)."""
    if not 400 <= response.status_code < 500:
        return None
    # schemathesis keeps headers as {lower-case name: [values]}
    values = {name.lower(): value for name, value in response.headers.items()}.get("content-type")
    content_type = (values[0] if isinstance(values, list) else values) or ""
    assert content_type.split(";")[0].strip() == "application/problem+json", content_type
    body = response.json()
    assert body["status"] == response.status_code and body["code"] and body["title"], body
    return None


def local_receiver(url: str) -> str:
    """Return ``url`` with its host moved under ``.invalid``, port 9 and path ``/fuzz``.

    The drawn host's characters stay (a host IDNA cannot encode is what the run
    must send), but no delivery can leave this machine: no name under
    ``.invalid`` resolves (RFC 6761, section 6.4) and nothing listens on the
    discard port. ``[`` is dropped, so no parser reads an IPv6 literal out of
    the host; a ``:`` makes the port unparseable, which is refused.
    """
    _, separator, rest = url.partition("://")
    if not separator or url.endswith(".invalid:9/fuzz"):
        return url  # not a URL (the pattern refuses it), or a replayed case, already moved
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].replace("[", "")
    return f"http://{host}.invalid:9/fuzz"


@pytest.fixture(autouse=True, scope="module")
def _forget_receivers() -> Any:
    """Delete the endpoints the run registered, so later tests' events do not fan out to them."""
    yield
    from sqlalchemy import delete

    from shared import db
    from shared.models import WebhookEndpoint

    with db.transaction() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.url.like("%.invalid:9/fuzz")))


def _keep_receivers_local(case: Any) -> None:
    """Move any webhook endpoint the case registers or changes to :func:`local_receiver`."""
    if "webhook-endpoints" in case.path and isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str):
            case.body["url"] = local_receiver(url)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    problem_json_for_4xx,
]


def _call_as_ops(case: Any, ops_headers: dict[str, str]) -> None:
    # The ops key may call everything, so answers come from the routes, not from a 403.
    case.headers = {**(case.headers or {}), **ops_headers}
    _keep_receivers_local(case)
    case.call_and_validate(checks=CHECKS)


@schema.exclude(_takes_free_text).parametrize()
@FUZZ_SETTINGS
def test_every_operation_keeps_its_contract(case: Any, ops_headers: dict[str, str]) -> None:
    _call_as_ops(case, ops_headers)


@schema.include(_takes_free_text).parametrize()
@settings(FUZZ_SETTINGS, max_examples=FREE_TEXT_EXAMPLES)
def test_every_free_text_operation_keeps_its_contract(
    case: Any, ops_headers: dict[str, str]
) -> None:
    _call_as_ops(case, ops_headers)


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=3)
def test_every_v1_operation_needs_a_key(case: Any) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers
    response = case.call()
    if case.path.startswith("/v1"):
        assert response.status_code == 401, (case.method, case.path, response.status_code)
        assert response.json()["code"] == "unauthenticated"


@functools.cache
def _ops_headers() -> dict[str, str]:
    """Return the Authorization header of an ops key made for the stateful run."""
    from shared import db
    from shared.services.api_keys import Role, create_api_key

    with db.transaction() as session:
        _, secret = create_api_key(session, role=Role.OPS, name="contract workflows")
    return {"Authorization": f"Bearer {secret}"}


class ContractWorkflows(schema.as_state_machine()):  # type: ignore[misc]
    """Follow the document's links: create a wallet, then read it, its entries and balance;
    submit a transaction, then read it. Each step's answer passes ``CHECKS``."""

    def get_call_kwargs(self, case: Any) -> dict[str, Any]:
        _keep_receivers_local(case)
        return {"headers": _ops_headers()}

    def validate_response(
        self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))


TestContractWorkflows = ContractWorkflows.TestCase
TestContractWorkflows.settings = settings(
    FUZZ_SETTINGS, max_examples=max(5, EXAMPLES // 2), stateful_step_count=6
)
