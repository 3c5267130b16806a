"""Hostile input on every route is a clean 4xx problem+json that writes nothing (``api.edge``).

``ROUTES`` lists every route of the app with its body's text fields and its
query parameters; ``test_route_table_covers_every_route`` keeps it complete
against ``app.url_map``. Every text field, body key, query parameter name and
value of every route is then sent each hostile value that applies: a NUL, a
lone surrogate, invalid UTF-8, an over-long value, a deeply nested value. Once
exhaustively with one value each (``test_every_route_refuses_hostile_input``),
and once with values hypothesis draws (``test_hostile_input_never_passes``).
"""

from __future__ import annotations

import functools
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import text

from api.edge import BODY_BYTES_MAX, JSON_DEPTH_MAX, QUERY_VALUE_CHARS_MAX
from shared import db
from tests.servers import serve_web

# -- the routes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How the tests drive one route.

    Attributes:
        body: builds a valid body from ``World``; ``None`` for a route that reads no body.
        fields: dotted paths of the body's text fields.
        containers: dotted paths of the body's objects whose keys are tested
            (``""`` is the body itself).
        query: the route's query parameters.
    """

    body: Callable[[World], dict[str, Any]] | None = None
    fields: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    query: tuple[str, ...] = ()


def _transfer(world: World) -> dict[str, Any]:
    return {
        "type": "transfer", "amount": "1.00", "currency": "SGD",
        "source_wallet_id": world.wallet_id, "destination_wallet_id": world.other_wallet_id,
        "description": "rent", "metadata": {"note": "april"},
        "scheduled_at": "2026-01-01T00:00:00Z",  # past: applied at once, as without it
    }  # fmt: skip


def _capture(world: World) -> dict[str, Any]:
    return {"amount": "1.00", "destination_wallet_id": world.other_wallet_id}


LIST = ("limit", "cursor")

#: Every route of the app as (method, rule), HEAD and OPTIONS aside.
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route(),
    ("GET", "/readyz"): Route(),
    ("GET", "/metrics"): Route(),
    ("GET", "/static/<path:filename>"): Route(),
    ("GET", "/openapi.json"): Route(),
    ("GET", "/docs"): Route(),
    ("GET", "/docs/<path:filename>"): Route(),
    ("POST", "/v1/wallets"): Route(
        body=lambda w: {"owner_ref": f"hostile-{uuid.uuid4()}", "currency": "SGD"},
        fields=("owner_ref", "currency"),
        containers=("",),
    ),
    ("GET", "/v1/wallets"): Route(query=("owner_ref", *LIST)),
    ("GET", "/v1/wallets/<wallet_id>"): Route(),
    ("PATCH", "/v1/wallets/<wallet_id>"): Route(
        body=lambda w: {"status": "active"}, fields=("status",), containers=("",)
    ),
    ("GET", "/v1/wallets/<wallet_id>/entries"): Route(query=LIST),
    ("GET", "/v1/wallets/<wallet_id>/balance"): Route(query=("as_of",)),
    ("POST", "/v1/transactions"): Route(
        body=_transfer,
        fields=(
            "type",
            "amount",
            "currency",
            "source_wallet_id",
            "destination_wallet_id",
            "description",
            "metadata.note",
            "scheduled_at",
        ),  # fmt: skip
        containers=("", "metadata"),
    ),
    # Its items are refused one by one, in a 200 (tests/integration/test_batch_submission.py);
    # here, what refuses the whole batch.
    ("POST", "/v1/transactions/batch"): Route(
        body=lambda w: {"transactions": [{**_transfer(w), "idempotency_key": str(uuid.uuid4())}]},
        containers=("",),
    ),
    ("POST", "/v1/balance-monitors"): Route(
        body=lambda w: {
            "wallet_id": w.wallet_id,
            "field": "balance",
            "operator": "lt",
            "value": "5.00",
            "description": "low",
        },
        fields=("wallet_id", "field", "operator", "value", "description"),
        containers=("",),
    ),  # fmt: skip
    ("GET", "/v1/balance-monitors"): Route(query=("wallet_id", *LIST)),
    ("GET", "/v1/balance-monitors/<monitor_id>"): Route(),
    ("DELETE", "/v1/balance-monitors/<monitor_id>"): Route(),
    ("GET", "/v1/transactions"): Route(query=("status", "type", "wallet_id", *LIST)),
    ("GET", "/v1/transactions/<transaction_id>"): Route(query=("wait",)),
    ("POST", "/v1/transactions/<transaction_id>/retry"): Route(),
    ("POST", "/v1/transactions/retry"): Route(
        body=lambda w: {
            "wallet_id": w.wallet_id,
            "failure_code": "insufficient_funds",
            "since": "2026-01-01T00:00:00Z",
            "dry_run": True,
        },
        fields=("failure_code", "since", "wallet_id"),
        containers=("",),
    ),  # fmt: skip
    ("POST", "/v1/transactions/<transaction_id>/capture"): Route(
        body=_capture, fields=("amount", "destination_wallet_id"), containers=("",)
    ),
    ("POST", "/v1/transactions/<transaction_id>/void"): Route(body=lambda world: {}),
    ("POST", "/v1/transactions/<transaction_id>/reverse"): Route(
        body=lambda world: {"amount": "1.00", "description": "refund", "metadata": {"n": "1"}},
        fields=("amount", "description", "metadata.n"),
        containers=("", "metadata"),
    ),
    ("POST", "/v1/transactions/<transaction_id>/cancel"): Route(body=lambda world: {}),
    ("POST", "/v1/reconciliations"): Route(),
    ("GET", "/v1/reconciliations"): Route(query=LIST),
    ("GET", "/v1/reconciliations/<run_id>"): Route(),
    ("GET", "/"): Route(),
    ("GET", "/v1/ops/overview"): Route(),
    ("GET", "/v1/events"): Route(query=("type", "transaction_id", *LIST)),
    ("POST", "/v1/webhook-endpoints"): Route(
        body=lambda w: {
            "url": "http://127.0.0.1:9/hook",
            "events": ["transaction.completed"],
            "description": "hostile",
        },
        fields=("url", "description"),
        containers=("",),
    ),
    ("GET", "/v1/webhook-endpoints"): Route(query=LIST),
    ("GET", "/v1/webhook-endpoints/<endpoint_id>"): Route(),
    ("PATCH", "/v1/webhook-endpoints/<endpoint_id>"): Route(
        body=lambda w: {"status": "enabled"}, fields=("status",), containers=("",)
    ),
    ("DELETE", "/v1/webhook-endpoints/<endpoint_id>"): Route(),
    ("GET", "/v1/webhook-endpoints/<endpoint_id>/deliveries"): Route(query=("status", *LIST)),
    ("POST", "/v1/webhook-deliveries/<delivery_id>/retry"): Route(),
    ("GET", "/v1/audit-events"): Route(query=("action", "target_id", *LIST)),
}


@dataclass
class World:
    """Existing rows the routes' paths and bodies name, created on first use.

    Paths name real rows so that a hostile request the edge let through would
    reach the database, not stop at a 404.
    """

    client: Any
    headers: dict[str, str]
    wallet_factory: Callable[..., uuid.UUID]
    created: dict[str, str] = field(default_factory=dict)

    def _once(self, name: str, make: Callable[[], Any]) -> str:
        if name not in self.created:
            self.created[name] = str(make())
        return self.created[name]

    @property
    def wallet_id(self) -> str:
        return self._once("wallet_id", self.wallet_factory)

    @property
    def other_wallet_id(self) -> str:
        return self._once("other_wallet_id", self.wallet_factory)

    @property
    def transaction_id(self) -> str:
        def submit() -> str:
            body = {"type": "deposit", "amount": "5.00", "currency": "SGD",
                    "destination_wallet_id": self.wallet_id}  # fmt: skip
            headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
            response = self.client.post("/v1/transactions", json=body, headers=headers)
            assert response.status_code == 202, response.get_data(as_text=True)
            return response.get_json()["id"]

        return self._once("transaction_id", submit)

    @property
    def monitor_id(self) -> str:
        def create() -> str:
            body = {"wallet_id": self.wallet_id, "field": "balance", "operator": "lt",
                    "value": "5.00"}  # fmt: skip
            response = self.client.post("/v1/balance-monitors", json=body, headers=self.headers)
            assert response.status_code == 201, response.get_data(as_text=True)
            return response.get_json()["id"]

        return self._once("monitor_id", create)

    @property
    def run_id(self) -> str:
        def start() -> str:
            response = self.client.post("/v1/reconciliations", headers=self.headers)
            assert response.status_code == 202, response.get_data(as_text=True)
            return response.get_json()["id"]

        return self._once("run_id", start)

    @property
    def endpoint_id(self) -> str:
        def register() -> str:
            body = {"url": "http://127.0.0.1:9/hostile"}
            response = self.client.post("/v1/webhook-endpoints", json=body, headers=self.headers)
            assert response.status_code == 201, response.get_data(as_text=True)
            return response.get_json()["id"]

        return self._once("endpoint_id", register)

    @property
    def delivery_id(self) -> str:
        def deliver() -> str:
            from shared.models import WebhookDelivery
            from shared.services.events import record_run_event

            endpoint_id = uuid.UUID(self.endpoint_id)
            with db.transaction() as session:
                record_run_event(session, uuid.uuid4(), "error")
                return str(
                    session.query(WebhookDelivery.id)
                    .filter(WebhookDelivery.endpoint_id == endpoint_id)
                    .scalar()
                )

        return self._once("delivery_id", deliver)

    def path(self, rule: str) -> str:
        """Return ``rule`` with each ``<converter:name>`` replaced by a real id."""
        values = {"filename": "tally.css"}
        return re.sub(
            r"<(?:\w+:)?(\w+)>",
            lambda m: values.get(m.group(1)) or getattr(self, m.group(1)),
            rule,
        )


@pytest.fixture
def world(client: Any, ops_headers: dict[str, str], wallet_factory: Any) -> Iterator[World]:
    # The ops key may call every route, so a role never answers in place of the edge.
    world = World(client, ops_headers, wallet_factory)
    yield world
    if "endpoint_id" in world.created:  # an enabled endpoint would get every later event
        client.delete(f"/v1/webhook-endpoints/{world.created['endpoint_id']}", headers=ops_headers)


# -- hostile values and where they go -------------------------------------------------------

NUL, SURROGATE, INVALID_UTF8 = "nul", "surrogate", "invalid_utf8"
OVER_LONG, DEEP = "over_long", "deep"
_MARKER = "HOSTILEMARKER"


@dataclass(frozen=True)
class Hostile:
    """A hostile value: ``text`` (NUL, surrogate, over-long), or ``raw`` bytes between
    ``text`` halves (invalid UTF-8), or ``depth`` levels of nesting (``shape``: ``[`` or ``{``)."""

    kind: str
    text: str = ""
    raw: bytes = b""
    depth: int = 0
    shape: str = "["
    raw_in_query: bool = False

    def json_bytes(self) -> bytes:
        """Return the JSON text of this value (a string, or nested containers)."""
        if self.kind == INVALID_UTF8:
            half = len(self.text) // 2
            inner = json.dumps(self.text[:half])[1:-1] + "@@" + json.dumps(self.text[half:])[1:-1]
            return b'"' + inner.encode().replace(b"@@", self.raw) + b'"'
        if self.kind == DEEP:
            opening, closing = ("[", "]") if self.shape == "[" else ('{"k":', "}")
            return (opening * self.depth + '"x"' + closing * self.depth).encode()
        return json.dumps(self.text).encode()  # ensure_ascii: "\u0000", "\ud800" escapes

    def query_part(self) -> str:
        """Return this value percent-encoded for a query string (or raw, as latin-1 text)."""
        if self.kind == INVALID_UTF8:
            half = len(self.text) // 2
            raw = self.raw.decode("latin-1") if self.raw_in_query else quote(self.raw, safe="")
            return quote(self.text[:half], safe="") + raw + quote(self.text[half:], safe="")
        return quote(self.text.encode("utf-8", "surrogatepass"), safe="")


@dataclass(frozen=True)
class Case:
    """One hostile request: ``route`` with ``kind`` at ``target``.

    ``place`` is ``"body"`` (``target``: a dotted field), ``"key"`` (``target``:
    the object whose key is hostile), ``"query"`` (``target``: the parameter)
    or ``"query_name"``.
    """

    method: str
    rule: str
    place: str
    target: str
    kind: str

    def __str__(self) -> str:
        return f"{self.method} {self.rule} {self.place}:{self.target or '.'} {self.kind}"


def _cases() -> list[Case]:
    """Return every (route, place, target, kind) that applies, in table order."""
    cases = []
    text_kinds = (NUL, SURROGATE, INVALID_UTF8)
    for (method, rule), route in ROUTES.items():
        targets = [("query_name", "", text_kinds)]
        targets += [("query", name, (*text_kinds, OVER_LONG)) for name in route.query]
        if route.body is None:
            # A route that reads no body still has a body checked at the edge;
            # an over-long unknown field is merely ignored there.
            targets += [("body", "note", (*text_kinds, DEEP)), ("key", "", text_kinds)]
        targets += [("body", path, (*text_kinds, OVER_LONG, DEEP)) for path in route.fields]
        targets += [("key", path, (*text_kinds, OVER_LONG)) for path in route.containers]
        cases += [
            Case(method, rule, place, target, kind)
            for place, target, kinds in targets
            for kind in kinds
        ]
    return cases


CASES = _cases()


@dataclass(frozen=True)
class Sent:
    """A request as sent, and what the edge must answer."""

    method: str
    path: str
    query_string: str
    body: bytes | None
    status: int | None  # None: any 4xx
    field: str | None  # the field an ``errors`` entry must name, when known


def build(case: Case, hostile: Hostile, world: World) -> Sent:
    """Return the request of ``case`` carrying ``hostile``, and the answer expected."""
    route = ROUTES[(case.method, case.rule)]
    query_string, body, expected_field = "", None, None
    if case.place == "query":
        query_string = f"{case.target}={hostile.query_part()}"
        expected_field = case.target
    elif case.place == "query_name":
        query_string = f"{hostile.query_part()}=1"
        expected_field = hostile.text if hostile.kind == NUL else None
    else:
        document = route.body(world) if route.body is not None else {}
        parts = case.target.split(".") if case.target else []
        parent = document
        for part in parts[:-1] if case.place == "body" else parts:
            parent = parent[part]
        if case.place == "body":
            parent[parts[-1]] = _MARKER
            if hostile.kind in (NUL, OVER_LONG):
                expected_field = case.target
        else:
            parent[_MARKER] = "x"
            if hostile.kind == NUL:
                expected_field = ".".join([*parts, hostile.text])
        body = json.dumps(document).encode().replace(f'"{_MARKER}"'.encode(), hostile.json_bytes())
    status = {NUL: 422, SURROGATE: 400, INVALID_UTF8: 400, DEEP: 400}.get(hostile.kind)
    if hostile.kind == OVER_LONG and case.place == "query":
        status = 422  # the edge bounds every query value; a body field's bound is its schema's
    return Sent(case.method, world.path(case.rule), query_string, body, status, expected_field)


def send(client: Any, sent: Sent, headers: dict[str, str]) -> Any:
    """Send ``sent`` with the Flask test client; the query string goes in as is."""
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    if sent.body is not None:
        headers["Content-Type"] = "application/json"
    return client.open(
        sent.path,
        method=sent.method,
        data=sent.body,
        headers=headers,
        # As a server passes it (PEP 3333: latin-1 text), raw bytes included.
        environ_overrides={"QUERY_STRING": sent.query_string},
    )


# -- what is checked ------------------------------------------------------------------------


@functools.cache
def _count_sql() -> str:
    with db.transaction() as session:
        names = session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ).all()
    assert names, "no tables in the public schema"
    return "SELECT " + ", ".join(f'(SELECT count(*) FROM public."{name}")' for name in names)


def row_counts() -> tuple[int, ...]:
    """Return the row count of every table in the ``public`` schema (plain SQL)."""
    with db.transaction() as session:
        return tuple(session.execute(text(_count_sql())).one())


def describe(sent: Sent) -> str:
    """Return the request as a line to print when it fails."""
    body = sent.body[:300] if sent.body else b""
    return f"{sent.method} {sent.path}?{sent.query_string[:300]!r} body={body!r}"


def check_refused(client: Any, sent: Sent, headers: dict[str, str]) -> None:
    """Send ``sent``; assert a 4xx problem+json as expected, and that no row was written."""
    before = row_counts()
    response = send(client, sent, headers)
    answer = f"{describe(sent)}\n-> {response.status_code} {response.get_data(as_text=True)[:500]}"
    assert 400 <= response.status_code < 500, answer
    if sent.status is not None:
        assert response.status_code == sent.status, answer
    assert response.content_type == "application/problem+json", answer
    problem = response.get_json()
    assert problem["status"] == response.status_code and problem["code"], answer
    if sent.field is not None:
        assert sent.field in [e["field"] for e in problem.get("errors", [])], answer
    assert row_counts() == before, f"a refused request wrote rows: {answer}"


# -- the tests ------------------------------------------------------------------------------


def test_route_table_covers_every_route(app: Any) -> None:
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert served - ROUTES.keys() == set(), "add these routes to ROUTES"
    assert ROUTES.keys() - served == set(), "these routes are gone: remove them from ROUTES"


def _fixed(kind: str, place: str) -> Hostile:
    """Return one representative hostile value of ``kind``."""
    over_long = QUERY_VALUE_CHARS_MAX + 1 if place.startswith("query") else 600
    return {
        NUL: Hostile(NUL, text="a\x00b"),
        SURROGATE: Hostile(SURROGATE, text="a\ud800b"),
        INVALID_UTF8: Hostile(INVALID_UTF8, text="ab", raw=b"\xff"),
        OVER_LONG: Hostile(OVER_LONG, text="9" * over_long),
        DEEP: Hostile(DEEP, depth=JSON_DEPTH_MAX + 1),
    }[kind]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_route_refuses_hostile_input(
    client: Any, world: World, ops_headers: dict[str, str], case: Case
) -> None:
    check_refused(client, build(case, _fixed(case.kind, case.place), world), ops_headers)


_texts = st.text(max_size=12)  # hypothesis's text holds no surrogates unless asked


@st.composite
def hostile_values(draw: st.DrawFn, kind: str, place: str) -> Hostile:
    """Draw a hostile value of ``kind`` for ``place``: where the bad part sits and what is around it."""
    if kind == NUL:
        return Hostile(NUL, text=draw(_texts) + "\x00" + draw(_texts))
    if kind == SURROGATE:
        lone = chr(draw(st.integers(0xD800, 0xDFFF)))
        return Hostile(SURROGATE, text=draw(_texts) + lone + draw(_texts))
    if kind == INVALID_UTF8:
        raw = draw(
            st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=6)
            .map(bytes)
            .filter(lambda b: not _is_utf8(b))
        )
        return Hostile(INVALID_UTF8, text=draw(_texts), raw=raw, raw_in_query=draw(st.booleans()))
    if kind == OVER_LONG:
        low = QUERY_VALUE_CHARS_MAX + 1 if place.startswith("query") else 501
        length = draw(st.integers(low, 4 * low))
        return Hostile(OVER_LONG, text=draw(st.sampled_from("a9Z-._~ ")) * length)
    # Up to the deepest well-formed text that fits the body limit.
    depth = draw(st.integers(JSON_DEPTH_MAX + 1, BODY_BYTES_MAX // 6 - 1))
    return Hostile(DEEP, depth=depth, shape=draw(st.sampled_from("[{")))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), case=st.sampled_from(CASES))
def test_hostile_input_never_passes(
    client: Any, world: World, ops_headers: dict[str, str], data: st.DataObject, case: Case
) -> None:
    hostile = data.draw(hostile_values(case.kind, case.place), label="hostile")
    sent = build(case, hostile, world)
    note(describe(sent))
    check_refused(client, sent, ops_headers)


# -- explicit cases -------------------------------------------------------------------------


@pytest.fixture
def json_headers(service_headers: dict[str, str]) -> dict[str, str]:
    return {**service_headers, "Content-Type": "application/json"}


def problem_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status`` and ``code``; return its body."""
    body = response.get_json()
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.content_type == "application/problem+json"
    assert body["status"] == status and body["code"] == code, body
    return body


def fields_of(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem.get("errors", [])]


def test_body_one_byte_over_the_limit_is_413(client: Any, json_headers: dict[str, str]) -> None:
    body = b" " * (BODY_BYTES_MAX + 1)
    problem_of(
        client.post("/v1/wallets", data=body, headers=json_headers), 413, "payload_too_large"
    )


def test_body_at_the_limit_is_read(client: Any, json_headers: dict[str, str]) -> None:
    document = json.dumps({"owner_ref": f"limit-{uuid.uuid4()}", "currency": "SGD"}).encode()
    body = document + b" " * (BODY_BYTES_MAX - len(document))  # trailing whitespace is JSON
    assert client.post("/v1/wallets", data=body, headers=json_headers).status_code == 201


def _chunked(client: Any, headers: dict[str, str], body: bytes) -> Any:
    # A chunked body has no Content-Length; a server that de-chunks it says so
    # with wsgi.input_terminated (the server's WSGI bridge does), and werkzeug then streams it.
    return client.post(
        "/v1/wallets",
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_the_limit_is_413(client: Any, json_headers: dict[str, str]) -> None:
    response = _chunked(client, json_headers, b" " * (BODY_BYTES_MAX + 1))
    problem_of(response, 413, "payload_too_large")
    response = _chunked(client, json_headers, b" " * (10 * 1024 * 1024))
    problem_of(response, 413, "payload_too_large")


def test_chunked_body_at_the_limit_is_read(client: Any, json_headers: dict[str, str]) -> None:
    document = json.dumps({"owner_ref": f"chunked-{uuid.uuid4()}", "currency": "SGD"}).encode()
    response = _chunked(client, json_headers, document + b" " * (BODY_BYTES_MAX - len(document)))
    assert response.status_code == 201, response.get_json()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the API as production does (``tally serve web``), on a free port; yield its URL."""
    with serve_web(tmp_path_factory.mktemp("web")) as (url, _):
        yield url


def test_chunked_bodies_through_the_server(server_url: str, json_headers: dict[str, str]) -> None:
    # requests sends a generator's body with Transfer-Encoding: chunked, no Content-Length.
    def chunks(body: bytes) -> Iterator[bytes]:
        yield from (body[i : i + 8192] for i in range(0, len(body), 8192))

    url = f"{server_url}/v1/wallets"
    too_large = requests.post(
        url, data=chunks(b" " * (BODY_BYTES_MAX + 1)), headers=json_headers, timeout=30
    )
    assert too_large.status_code == 413, too_large.text
    assert too_large.headers["Content-Type"] == "application/problem+json"
    assert too_large.json()["code"] == "payload_too_large"
    document = json.dumps({"owner_ref": f"server-{uuid.uuid4()}", "currency": "SGD"}).encode()
    at_limit = document + b" " * (BODY_BYTES_MAX - len(document))
    created = requests.post(url, data=chunks(at_limit), headers=json_headers, timeout=30)
    assert created.status_code == 201, created.text


def test_ten_megabyte_body_is_413(client: Any, json_headers: dict[str, str]) -> None:
    body = b"[" * (10 * 1024 * 1024)
    problem_of(
        client.post("/v1/wallets", data=body, headers=json_headers), 413, "payload_too_large"
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None,
                     "application/json; charset=latin-1", "application/jsonx"],
)  # fmt: skip
def test_body_that_is_not_json_media_type_is_415(
    client: Any, service_headers: dict[str, str], content_type: str | None
) -> None:
    headers = dict(service_headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = json.dumps({"owner_ref": f"typed-{uuid.uuid4()}", "currency": "SGD"}).encode()
    response = client.post("/v1/wallets", data=body, headers=headers)
    problem_of(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8",
     "application/merge-patch+json"],
)  # fmt: skip
def test_json_media_types_are_accepted(
    client: Any, service_headers: dict[str, str], content_type: str
) -> None:
    body = json.dumps({"owner_ref": f"typed-{uuid.uuid4()}", "currency": "SGD"}).encode()
    response = client.post(
        "/v1/wallets", data=body, headers={**service_headers, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.get_json()


def test_posts_without_a_body_need_no_content_type(
    client: Any, ops_headers: dict[str, str], world: World
) -> None:
    assert client.post("/v1/reconciliations", headers=ops_headers).status_code == 202
    response = client.post(f"/v1/transactions/{world.transaction_id}/retry", headers=ops_headers)
    problem_of(response, 409, "not_retryable")  # read as a request, not refused at the edge


@pytest.mark.parametrize("depth", [JSON_DEPTH_MAX + 1, 1_000])
def test_nesting_deeper_than_the_bound_is_400(
    client: Any, json_headers: dict[str, str], depth: int
) -> None:
    body = b"[" * depth + b"]" * depth
    response = client.post("/v1/wallets", data=body, headers=json_headers)
    assert "nested" in problem_of(response, 400, "malformed_request")["detail"]


def test_fifty_thousand_deep_nesting_is_refused_without_recursion(
    client: Any, json_headers: dict[str, str]
) -> None:
    # Unclosed, it fits the body limit and reaches the parser, which stops at its
    # own depth limit (orjson: 1024), as it does for the deepest closed text that fits.
    response = client.post("/v1/wallets", data=b"[" * 50_000, headers=json_headers)
    problem_of(response, 400, "malformed_request")
    response = client.post("/v1/wallets", data=b"[" * 32_000 + b"]" * 32_000, headers=json_headers)
    problem_of(response, 400, "malformed_request")
    # Closed it is 100,000 bytes: over the body limit, refused before it is parsed.
    response = client.post("/v1/wallets", data=b"[" * 50_000 + b"]" * 50_000, headers=json_headers)
    problem_of(response, 413, "payload_too_large")


def test_group_legs_are_within_the_depth_bound(client: Any, json_headers: dict[str, str]) -> None:
    # A group (object > legs array > leg object) is depth 3; the NUL is what is refused.
    leg = {"source_wallet_id": str(uuid.uuid4()), "destination_wallet_id": str(uuid.uuid4()),
           "amount": "1\x00", "currency": "SGD"}  # fmt: skip
    body = json.dumps({"type": "group", "legs": [leg, leg]})
    response = client.post(
        "/v1/transactions",
        data=body,
        headers={**json_headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    problem = problem_of(response, 422, "validation_failed")
    assert fields_of(problem) == ["legs.0.amount", "legs.1.amount"]


def test_nul_in_owner_ref_body_is_422(client: Any, service_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/wallets", json={"owner_ref": "a\u0000b", "currency": "SGD"}, headers=service_headers
    )
    assert fields_of(problem_of(response, 422, "validation_failed")) == ["owner_ref"]


def test_nul_in_owner_ref_query_is_422(client: Any, service_headers: dict[str, str]) -> None:
    response = client.get("/v1/wallets?owner_ref=%00", headers=service_headers)
    assert fields_of(problem_of(response, 422, "validation_failed")) == ["owner_ref"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"metadata": {"bank_ref": "x\x00"}}, "metadata.bank_ref"),
     ({"metadata": {"a\x00": "x"}}, "metadata.a\x00"),
     ({"description": "\x00"}, "description")],
)  # fmt: skip
def test_nul_in_a_submission_is_422_naming_the_field(
    client: Any,
    service_headers: dict[str, str],
    wallet_factory: Any,
    extra: dict[str, Any],
    field: str,
) -> None:
    body = {"type": "deposit", "amount": "1.00", "currency": "SGD",
            "destination_wallet_id": str(wallet_factory()), **extra}  # fmt: skip
    before = row_counts()
    response = client.post(
        "/v1/transactions",
        json=body,
        headers={**service_headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert fields_of(problem_of(response, 422, "validation_failed")) == [field]
    assert row_counts() == before


def test_lone_surrogate_escape_in_the_body_is_400(
    client: Any, json_headers: dict[str, str]
) -> None:
    # orjson refuses a lone surrogate escape while parsing (it has no UTF-8 form).
    body = b'{"owner_ref": "a\\ud800", "currency": "SGD"}'
    problem_of(
        client.post("/v1/wallets", data=body, headers=json_headers), 400, "malformed_request"
    )


def test_invalid_utf8_body_is_400(client: Any, json_headers: dict[str, str]) -> None:
    body = b'{"owner_ref": "\xff\xfe", "currency": "SGD"}'
    problem_of(
        client.post("/v1/wallets", data=body, headers=json_headers), 400, "malformed_request"
    )


@pytest.mark.parametrize("query_string", ["owner_ref=%FF", "owner_ref=%ED%A0%80", "owner_ref=\xff"])
def test_invalid_utf8_in_the_query_is_400(
    client: Any, service_headers: dict[str, str], query_string: str
) -> None:
    response = client.get(
        "/v1/wallets", headers=service_headers, environ_overrides={"QUERY_STRING": query_string}
    )
    assert fields_of(problem_of(response, 400, "malformed_request")) == ["owner_ref"]


def test_unknown_routes_answer_404_before_the_edge(
    client: Any, service_headers: dict[str, str]
) -> None:
    response = client.get("/v1/nothing?x=%00", headers=service_headers)
    problem_of(response, 404, "not_found")


def test_unauthenticated_requests_answer_401_before_the_edge(client: Any) -> None:
    response = client.post("/v1/wallets", data=b"x" * (BODY_BYTES_MAX + 1))
    problem_of(response, 401, "unauthenticated")
