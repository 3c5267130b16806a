"""Send one signed webhook: the SSRF guard, the Standard Webhooks signature, the kept HTTP client.

Signing follows the Standard Webhooks specification (standardwebhooks.com,
"Signature scheme"), through its reference library: ``webhook-signature`` is
``v1,`` + base64 of HMAC-SHA256, keyed with the base64-decoded part of the
secret after ``whsec_``, over ``"{webhook-id}.{webhook-timestamp}.{body}"``.

The SSRF guard: a receiver's URL is chosen by whoever holds an ops key, and
the worker that calls it sits inside the network, next to PostgreSQL, Redis
and cloud metadata services (169.254.169.254). Unless
``TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`` is on, the host is resolved before
every attempt and refused if *any* of its addresses is not globally routable
(private, loopback, link-local, shared, reserved, multicast: Python's
``ipaddress.is_global``), so a name with one public and one private address
cannot slip through. Redirects are never followed: a public receiver cannot
bounce the request inward. The HTTP client resolves the name again when it
connects; a DNS server that answers differently within that moment could
still steer it, which an egress proxy would close.

What a URL may be is decided once, by :func:`receiver_url`, at registration
and again before every attempt: the URL as the HTTP client will send it,
its host encoded to ASCII by IDNA 2008 (the ``idna`` library, the encoding
httpx itself uses) and every DNS label within the 63-octet limit, so a
stored URL can fail an attempt but never raise in the worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ipaddress
import os
import re
import socket
from urllib.parse import urlsplit

import httpx
import idna
from standardwebhooks.webhooks import Webhook

#: What a receiver is told about the sender.
_USER_AGENT = "Tally-Webhooks/1"


#: An ASCII DNS label as resolvers take it: letters, digits, hyphens (RFC 1123), and the
#: underscore that private DNS and container networks use.
_ASCII_LABEL = re.compile(r"[A-Za-z0-9_-]+")


class UnsendableUrl(ValueError):
    """The URL cannot be sent to: not http(s), no host, a bad port, or a host DNS cannot carry."""


class DestinationNotAllowed(Exception):
    """The URL's host resolves to an address receivers may not use, or does not resolve."""


def receiver_url(url: str) -> httpx.URL:
    """Parse a receiver URL as the worker sends to it; return it with its host in ASCII.

    Both parsers that see a stored URL must accept it: the standard library's
    ``urlsplit`` (the audit log and the SSRF guard's port) and httpx's (the
    request). The host is an IP address or a DNS name whose labels are 1 to
    63 octets once IDNA-encoded, 253 in all (RFC 1035, section 2.3.4): a
    longer one raises ``UnicodeError`` from the resolver, not a connection
    error. A non-ASCII host must be valid IDNA 2008 (RFC 5891) as the ``idna``
    library encodes it; an ASCII label starting ``xn--`` must decode.

    Raises:
        UnsendableUrl: with a sentence naming what is wrong.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not 0-65535
        parsed = httpx.URL(url)
        port = parsed.port
    except (ValueError, httpx.InvalidURL) as error:
        raise UnsendableUrl(f"not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise UnsendableUrl("not an absolute http or https URL")
    if port is not None and not 0 < port < 65536:
        raise UnsendableUrl(f"port {port} is not 1-65535")
    _check_host(parsed.raw_host.decode("ascii"))
    return parsed


def _check_host(host: str) -> None:
    """Refuse an encoded host that is neither an IP address nor a name DNS can carry."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if not idna.valid_string_length(host, trailing_dot=host.endswith(".")):
        raise UnsendableUrl("the host is longer than 253 octets")
    for label in labels:
        if not label or not idna.valid_label_length(label):
            raise UnsendableUrl(f"the host has a label of {len(label)} octets, not 1-63")
        if not _ASCII_LABEL.fullmatch(label):
            raise UnsendableUrl(f"the host's label {label!r} is not letters, digits and hyphens")
        if label[:4].lower() == "xn--":
            try:
                idna.decode(label)
            except idna.IDNAError as error:
                raise UnsendableUrl(f"the host's label {label!r} is not IDNA: {error}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: a status code (``None`` without an answer) and an error message."""

    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        """Tell whether the receiver answered 2xx (docs/api.md, "Webhooks": success)."""
        return self.status_code is not None and 200 <= self.status_code < 300


def _not_global(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_destination(url: str, *, allow_private_networks: bool) -> None:
    """Refuse a receiver URL whose host is, or resolves to, any non-global address.

    Args:
        url: an ``http`` or ``https`` URL.
        allow_private_networks: ``TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS``; when
            True nothing is checked.

    Raises:
        DestinationNotAllowed: some address is private, loopback, link-local or
            otherwise not global, or the host does not resolve.
    """
    if allow_private_networks:
        return
    try:
        parsed = receiver_url(url)
    except UnsendableUrl as error:
        raise DestinationNotAllowed(str(error)) from None
    # The host the client will connect to: IDNA-encoded, IPv6 without brackets.
    host = parsed.raw_host.decode("ascii")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise DestinationNotAllowed(f"{host} does not resolve: {error}") from None
    refused = sorted({str(info[4][0]) for info in infos if _not_global(str(info[4][0]))})
    if refused:
        raise DestinationNotAllowed(
            f"{host} resolves to {', '.join(refused)}, not a public address; "
            "set TALLY_WEBHOOK_ALLOW_PRIVATE_NETWORKS to allow it"
        )


def signature_headers(
    secret: str, message_id: str, body: str, *, at: dt.datetime
) -> dict[str, str]:
    """Return the Standard Webhooks headers of ``body``: webhook-id, -timestamp, -signature.

    Args:
        secret: the endpoint's ``whsec_...`` secret.
        message_id: the event's id (``evt_...``): the same on every attempt, so
            receivers can deduplicate.
        at: the attempt's time; ``webhook-timestamp`` is its Unix seconds.
    """
    at = at.astimezone(dt.UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }


@functools.cache
def _client(pid: int, timeout_seconds: float) -> httpx.Client:
    """Return this process's kept client: pooled connections, never shared across a fork."""
    return httpx.Client(
        timeout=timeout_seconds,
        follow_redirects=False,
        headers={"user-agent": _USER_AGENT},
        trust_env=False,
    )


def send(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    timeout_seconds: float,
    allow_private_networks: bool,
) -> Outcome:
    """POST ``body`` (JSON text) to ``url`` with ``headers``; never raise.

    Args:
        timeout_seconds: for connecting, and for each read and write (docs/api.md, "Webhooks": 10 s).
        allow_private_networks: see :func:`check_destination`.

    Returns:
        The status code, or ``None`` with the reason the request got no answer
        (a URL that cannot be sent to, a refused destination, a timeout, a
        connection error). A redirect is an answer like any other non-2xx one.
    """
    try:
        parsed = receiver_url(url)
        check_destination(url, allow_private_networks=allow_private_networks)
    except UnsendableUrl as error:
        return Outcome(None, f"invalid URL: {error}"[:500])
    except DestinationNotAllowed as error:
        return Outcome(None, f"destination not allowed: {error}"[:500])
    client = _client(os.getpid(), timeout_seconds)
    request_headers = {"content-type": "application/json", **headers}
    try:
        # Streamed and closed unread: the receiver's answer body is not needed.
        with client.stream(
            "POST", parsed, content=body.encode(), headers=request_headers
        ) as answer:
            status = answer.status_code
    except httpx.TimeoutException:
        return Outcome(None, f"no answer within {timeout_seconds:g} s")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
        # ValueError (UnicodeError among them) is what the resolver raises on a
        # name it cannot encode: receiver_url refuses those, this keeps the promise.
        return Outcome(None, f"{type(error).__name__}: {error}"[:500])
    if 200 <= status < 300:
        return Outcome(status, None)
    return Outcome(status, f"answered {status}")
