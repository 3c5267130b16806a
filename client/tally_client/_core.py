"""The request-building core both clients share: calls, retry decisions, answers.

A :class:`Call` describes one API call completely (method, path, query, body,
headers, whether a replay is safe, how to read the answer); ``_calls`` builds
them. :class:`Core` turns a call into an ``httpx.Request``, decides after each
attempt whether to try again and after how long, and turns the final answer
into a model or an exception. ``Tally`` and ``AsyncTally`` only send and sleep.

Retries (docs/client.md, "Retries"): a connection that failed, ``429`` and
``503`` are retried with exponential backoff and full jitter, at least as long
as ``Retry-After`` (or ``RateLimit-Reset``) asks, and with the same request,
so the same ``Idempotency-Key``. No other ``4xx`` or ``5xx`` is retried. A
call that is not idempotent (creating a wallet, an ops retry) is retried only
where the API cannot have acted: the connection was never made, or the answer
was ``429`` or ``503`` (the API records nothing then).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from tally_client.errors import error_for

T = TypeVar("T")

#: A money amount in major units: a Decimal, a decimal string (``"10.50"``), or an int.
#: Never a float: binary floating point cannot hold ``0.10``.
Amount = Decimal | str | int

#: Statuses retried with the same request: rate limited, and "nothing was recorded, try again".
RETRY_STATUSES = frozenset({429, 503})


def format_amount(amount: Amount) -> str:
    """Return ``amount`` as the API's decimal string in major units (``Decimal("10.5")`` -> ``"10.5"``).

    The API checks the digits against the currency's ISO 4217 exponent.

    Raises:
        TypeError: ``amount`` is a float or a bool.
        ValueError: a Decimal that is not finite.
    """
    if isinstance(amount, bool | float):
        raise TypeError("amounts are Decimal, str or int in major units, never float")
    if isinstance(amount, Decimal):
        if not amount.is_finite():
            raise ValueError(f"amount {amount} is not a finite decimal")
        return format(amount, "f")
    return str(amount)


def new_idempotency_key() -> str:
    """Return a fresh idempotency key: a random UUID (version 4) as a string."""
    return str(uuid.uuid4())


def jsonable(value: Any) -> Any:
    """Return ``value`` with Decimals as amount strings, UUIDs and datetimes as strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal | float):
        return format_amount(value)  # type: ignore[arg-type]  # a float raises: never near money
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(exclude_none=True))
    return value


def _model_reader(model: Any) -> Callable[[httpx.Response], Any]:
    """Return a reader that validates a response's JSON body as ``model`` (a type or a generic)."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    return lambda response: adapter.validate_json(response.content)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call, ready to send any number of times with the same headers and body.

    Attributes:
        method: the HTTP method.
        path: the path under the base URL, ids filled in.
        read: turns the successful answer into the result.
        params: query parameters; None values are left out.
        body: the JSON body, already JSON-ready, or None for none.
        headers: extra headers (``Idempotency-Key``).
        idempotent: a replay cannot act twice (a read, a keyed submission, a PATCH).
        accept: error statuses whose body is still the result (``/readyz``'s ``503``).
        extra_timeout_seconds: added to the read timeout (a long-poll's ``wait``).
        pause_seconds: waited before the first attempt (a wait's pause while a
            transaction is ``scheduled``, which the API's long-poll does not hold).
    """

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    accept: frozenset[int] = frozenset()
    extra_timeout_seconds: float = 0.0
    pause_seconds: float = 0.0

    @classmethod
    def of(cls, method: str, path: str, model: Any, **options: Any) -> Call[Any]:
        """Return a call whose answer is validated as ``model`` (a pydantic model or type)."""
        return cls(method, path, _model_reader(model), **options)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before sending a call again.

    Attributes:
        max_retries: retries after the first attempt (0: never retry).
        backoff_base_seconds: the first backoff's cap; it doubles per retry.
        backoff_max_seconds: the cap of any backoff.
        retry_after_max_seconds: the most a ``Retry-After`` may make the client wait.
    """

    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    retry_after_max_seconds: float = 60.0

    def backoff_seconds(self, attempt: int) -> float:
        """Return a full-jitter backoff for retry ``attempt`` (0 first): uniform in [0, cap]."""
        cap = min(self.backoff_max_seconds, self.backoff_base_seconds * 2**attempt)
        return random.uniform(0, cap)

    def delay_seconds(
        self,
        call: Call[Any],
        attempt: int,
        *,
        response: httpx.Response | None = None,
        error: httpx.TransportError | None = None,
    ) -> float | None:
        """Return how long to wait before retrying ``call`` after ``attempt``, or None to stop.

        ``attempt`` counts from 0; pass the answer, or the transport error if
        there was none.
        """
        if attempt >= self.max_retries:
            return None
        if error is not None:
            # Without a connection the request never left; otherwise only a keyed or
            # read-only call may be sent again.
            if call.idempotent or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                return self.backoff_seconds(attempt)
            return None
        assert response is not None
        if response.status_code not in RETRY_STATUSES or response.status_code in call.accept:
            return None
        asked = server_delay_seconds(response.headers)
        backoff = self.backoff_seconds(attempt)
        if asked is None:
            return backoff
        return min(self.retry_after_max_seconds, max(asked, backoff))


def server_delay_seconds(headers: httpx.Headers) -> float | None:
    """Return the wait the server asked for: ``Retry-After`` (seconds or an HTTP date), else
    ``RateLimit-Reset`` (seconds until the window ends, draft-ietf-httpapi-ratelimit-headers),
    else None."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):
                return None
            return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    reset = headers.get("RateLimit-Reset")
    if reset is not None:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


class Core:
    """What ``Tally`` and ``AsyncTally`` share: base URL, key, timeout, retry policy.

    Args:
        base_url: the API's origin, e.g. ``http://127.0.0.1:8000``.
        api_key: a ``service`` or ``ops`` key, sent as ``Authorization: Bearer``.
        timeout_seconds: connect, read, write and pool timeout of one attempt.
        max_retries: retries after the first attempt (see :class:`RetryPolicy`).
    """

    def __init__(
        self, base_url: str, api_key: str, *, timeout_seconds: float, max_retries: int
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.policy = RetryPolicy(max_retries=max_retries)
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": "tally-client/0.1",
        }

    def request_options(self, call: Call[Any]) -> dict[str, Any]:
        """Return the keyword arguments of ``httpx.Client.build_request`` for ``call``."""
        options: dict[str, Any] = {
            "method": call.method,
            "url": call.path,
            "headers": dict(call.headers),
            "timeout": httpx.Timeout(
                self.timeout_seconds, read=self.timeout_seconds + call.extra_timeout_seconds
            ),
        }
        if call.params:
            options["params"] = {k: v for k, v in jsonable(call.params).items() if v is not None}
        if call.body is not None:
            options["json"] = call.body
        return options

    def result(self, call: Call[T], response: httpx.Response) -> T:
        """Return the result of ``call``'s final answer.

        Raises:
            APIError: the answer is an error (the subclass by status).
        """
        if response.is_success or response.status_code in call.accept:
            return call.read(response)
        raise error_for(response)
