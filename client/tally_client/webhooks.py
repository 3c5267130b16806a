"""Verify a webhook delivery from Tally and read its event.

Tally signs every delivery per the Standard Webhooks specification
(docs/webhooks.md): ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of
``"{id}.{timestamp}.{body}"``, keyed with the endpoint's ``whsec_`` secret).
The check is the ``standardwebhooks`` library's, which also refuses a
timestamp more than five minutes from now, so a captured delivery cannot be
replayed later.
"""

from __future__ import annotations

from collections.abc import Mapping

import standardwebhooks

from tally_client.errors import WebhookVerificationError
from tally_client.models import Event


def verify(body: bytes | str, headers: Mapping[str, str], secret: str) -> Event:
    """Return the event of a delivery whose signature and timestamp verify.

    Args:
        body: the request body exactly as received (bytes, or text decoded as UTF-8);
            parse nothing before verifying.
        headers: the request's headers (any case): ``webhook-id``, ``webhook-timestamp``,
            ``webhook-signature``.
        secret: the endpoint's ``whsec_...`` secret.

    Returns:
        The :class:`~tally_client.models.Event` (``data``: a Transaction, a BalanceMonitorEvent or a ReconciliationRun).

    Raises:
        WebhookVerificationError: a header is missing or malformed, no signature matches
            (a tampered body, another secret), or the timestamp is more than five minutes
            old or ahead.
    """
    try:
        payload = standardwebhooks.Webhook(secret).verify(body, dict(headers))
    except standardwebhooks.WebhookVerificationError as error:
        raise WebhookVerificationError(str(error)) from error
    except (ValueError, TypeError) as error:  # a malformed signature, a body that is not UTF-8
        raise WebhookVerificationError(f"malformed webhook: {error}") from error
    return Event.model_validate(payload)
