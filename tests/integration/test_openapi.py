"""The OpenAPI document: the served one, docs/openapi.yaml and the app's routes agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from api.contract import OPERATIONS
from api.openapi import build_document, contract_drift, documented_rules, openapi_path
from cli.openapi import DEFAULT_PATH, render_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_route_is_documented_and_every_entry_is_a_route(app: Any) -> None:
    undocumented, stale = contract_drift(app)
    assert undocumented == set(), "add these endpoints to api.contract.OPERATIONS"
    assert stale == set(), "these endpoints are gone: remove them from api.contract.OPERATIONS"


def test_the_document_lists_exactly_the_routes(app: Any) -> None:
    document = build_document(app, strict=True)
    served = {(openapi_path(rule.rule), method.lower()) for method, rule in documented_rules(app)}
    listed = {(path, method) for path, item in document["paths"].items() for method in item}
    assert listed == served


def test_the_served_document_is_the_built_one_and_the_file(client: Any, app: Any) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    served = response.get_json()
    assert served == build_document(app, strict=True)
    on_disk = (ROOT / DEFAULT_PATH).read_text()
    assert on_disk == render_yaml(served), "docs/openapi.yaml is out of date: run `tally openapi`"
    assert yaml.safe_load(on_disk) == served


def test_operation_ids_are_unique_and_ops_calls_say_403(app: Any) -> None:
    document = build_document(app, strict=True)
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for operation in operations:
        entry = next(e for e in OPERATIONS.values() if e.operation_id == operation["operationId"])
        statuses = set(operation["responses"])
        assert ("403" in statuses) == (entry.role == "ops"), operation["operationId"]
        if entry.role != "none":
            assert {"401", "429", "503", "400", "413", "415", "422"} <= statuses
            assert "security" not in operation  # the document's bearer scheme applies
        else:
            assert operation["security"] == []
        for status, answer in operation["responses"].items():
            if "$ref" in answer:
                continue
            for media in answer.get("content", {}).values():
                assert media.get("example") is not None, (operation["operationId"], status)


def test_submit_links_to_the_transaction_and_needs_an_idempotency_key(app: Any) -> None:
    submit = build_document(app, strict=True)["paths"]["/v1/transactions"]["post"]
    link = submit["responses"]["202"]["links"]["GetTransaction"]
    assert link == {"operationId": "getTransaction", "parameters": {"transaction_id": "$response.body#/id"}}  # fmt: skip
    [header] = [p for p in submit["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and header["required"] is True


def test_problem_answers_are_problem_json(app: Any) -> None:
    document = build_document(app, strict=True)
    for status, response in document["components"]["responses"].items():
        assert list(response["content"]) == ["application/problem+json"], status
    assert "Retry-After" in document["components"]["responses"]["Problem429"]["headers"]


def test_docs_viewer_is_served_offline(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert "http" not in html.replace("http-equiv", ""), "the page must not load from elsewhere"
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/tally-docs.js"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 20, asset
    assert b"SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").data
    assert client.get("/docs/nothing.js").status_code == 404
