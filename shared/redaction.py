"""Masking of owner references and secrets before anything is logged.

Owner references (phone numbers, external ids) are personal data and API key
secrets are credentials: neither may reach a log in clear. ``mask_sensitive``
is a structlog processor (``shared.logs`` runs it on every event, before
rendering); ``MaskingFilter`` does the same for standard ``logging`` records,
such as uvicorn's access log, whose request line carries the query string.

What is masked:

- the value of any event key named ``owner_ref``, ``authorization``,
  ``secret``, ``api_key``, ``password`` or ``token``, or ending in ``_secret``
  or ``_token``, at any depth of nested dicts and lists (ids such as
  ``api_key_id`` stay: they are not secret and tie log lines together);
- inside any string: query parameters with those names (``owner_ref=...``),
  ``Bearer`` credentials, and Tally key secrets (``tally_service_...``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

MASK = "[masked]"

_SENSITIVE_KEY = re.compile(
    r"^(owner_ref|authorization|secret|api_key|password|token|\w+_secret|\w+_token)$", re.I
)
_SENSITIVE_QUERY = re.compile(
    r"\b(owner_ref|authorization|secret|api_key|password|token)=[^&\s\"']*", re.I
)
_BEARER = re.compile(r"\b(Bearer)\s+[^\s\"',]+", re.I)
_KEY_SECRET = re.compile(r"\btally_(service|ops)_[A-Za-z0-9_-]{8,}")
#: How deep nested values are searched; deeper ones are left as they are.
_DEPTH_MAX = 6


def mask_text(text: str) -> str:
    """Return ``text`` with sensitive query parameters, bearer credentials and key secrets masked."""
    if "=" in text:
        text = _SENSITIVE_QUERY.sub(lambda m: f"{m.group(1)}={MASK}", text)
    if "earer" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if "tally_" in text:
        text = _KEY_SECRET.sub(MASK, text)
    return text


def _masked(key: object, value: Any, depth: int) -> Any:
    if value is None:
        return None
    if isinstance(key, str) and _SENSITIVE_KEY.match(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if depth >= _DEPTH_MAX:
        return value
    if isinstance(value, dict):
        return {k: _masked(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(None, v, depth + 1) for v in value]
    return value


def mask_sensitive(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask owner references and secrets in a structlog event (a structlog processor).

    Returns:
        The event with each sensitive value replaced by ``MASK``.
    """
    for key, value in event_dict.items():
        event_dict[key] = _masked(key, value, 0)
    return event_dict


class MaskingFilter(logging.Filter):
    """Mask owner references and secrets in a standard ``logging`` record's message and args."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        return True


#: Standard loggers whose records may carry a request line or headers.
MASKED_LOGGERS = ("uvicorn.access", "uvicorn.error", "werkzeug", "gunicorn.access")


def install_masking_filters() -> None:
    """Add one ``MaskingFilter`` to each of ``MASKED_LOGGERS`` (idempotent)."""
    for name in MASKED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter())
