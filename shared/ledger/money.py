"""Amounts in integer minor units, parsed and rendered per the ISO 4217 exponent.

Inside Tally money is always an ``int`` of minor units plus the currency's
exponent (SGD 2, JPY 0, from ISO 4217 via babel's CLDR data). Decimal strings
exist only at the HTTP edge: :func:`parse_amount` turns one into minor units,
:func:`format_amount` renders minor units back. No float touches money.
"""

from __future__ import annotations

import functools
import re

from babel.numbers import get_currency_precision, list_currencies

from shared.ledger.errors import InvalidAmount, TallyError, UnknownCurrency, ValidationFailed

#: The largest amount accepted, in minor units (docs/api.md, "Conventions": 10^15).
AMOUNT_MINOR_MAX = 10**15

# ASCII digits only: str.isdigit() would accept other scripts' digits.
_AMOUNT_RE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)
#: An ISO 4217 alphabetic code's form; whether it names a currency is :func:`exponent_of`'s call.
CURRENCY_PATTERN = r"^[A-Z]{3}$"
_CODE_RE = re.compile(CURRENCY_PATTERN, re.ASCII)


@functools.cache
def exponent_of(currency: str) -> int:
    """Return the ISO 4217 minor-unit exponent of ``currency`` (``"SGD"`` -> 2, ``"JPY"`` -> 0).

    Args:
        currency: an upper-case ISO 4217 alphabetic code.

    Raises:
        UnknownCurrency: the code is not an ISO 4217 currency known to babel's CLDR data.
    """
    if not _CODE_RE.fullmatch(currency) or currency not in _iso_codes():
        raise UnknownCurrency(f"{currency!r} is not an ISO 4217 currency code")
    return int(get_currency_precision(currency))


@functools.cache
def _iso_codes() -> frozenset[str]:
    """Return every currency code babel knows (ISO 4217, current and historic)."""
    return frozenset(list_currencies())


def parse_amount(text: object, currency: str, *, allow_zero: bool = False) -> int:
    """Parse a positive decimal amount in major units into integer minor units.

    ``parse_amount("10.5", "SGD") == 1050``; ``parse_amount("1200", "JPY") == 1200``.

    Args:
        text: the amount as sent by a client; must be a ``str``.
        currency: the ISO 4217 code whose exponent bounds the fractional digits.
        allow_zero: accept zero too (an overdraft limit of ``"0.00"``: none).

    Returns:
        The amount in minor units, ``1 <= amount <= AMOUNT_MINOR_MAX`` (from 0 with ``allow_zero``).

    Raises:
        InvalidAmount: not a string, a sign, an exponent, whitespace, a comma,
            leading zeros, more fractional digits than the exponent allows, zero,
            or above 10^15 minor units.
        UnknownCurrency: ``currency`` is not ISO 4217.
    """
    exponent = exponent_of(currency)
    if not isinstance(text, str):
        raise InvalidAmount('amount must be a string such as "10.50"')
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        raise InvalidAmount(
            f"{text!r} is not a plain decimal: digits, optionally '.' and digits; "
            "no sign, exponent, spaces or leading zeros"
        )
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > exponent:
        raise InvalidAmount(
            f"{currency} has {exponent} fractional digit(s) (ISO 4217); {text!r} has {len(fraction)}"
        )
    if len(whole) > 16:  # cheap guard before int() on a huge string
        raise InvalidAmount(
            f"amount exceeds the maximum of {format_amount(AMOUNT_MINOR_MAX, currency)}"
        )
    amount_minor = int(whole) * 10**exponent + (
        int(fraction.ljust(exponent, "0")) if exponent else 0
    )
    if amount_minor == 0 and not allow_zero:
        raise InvalidAmount("amount must be positive")
    if amount_minor > AMOUNT_MINOR_MAX:
        raise InvalidAmount(
            f"amount exceeds the maximum of {format_amount(AMOUNT_MINOR_MAX, currency)} {currency}"
        )
    return amount_minor


def parse_amount_field(text: object, currency: str, *, field: str = "amount") -> int:
    """Parse an amount of a request field with :func:`parse_amount`, naming the field if it fails.

    For amounts checked where their currency is first known (a capture's or a
    reversal's is the original's).

    Raises:
        ValidationFailed: with the code of :func:`parse_amount`'s error
            (``invalid_amount``, ``unknown_currency``) and ``errors`` naming ``field``.
    """
    try:
        return parse_amount(text, currency)
    except TallyError as error:
        raise ValidationFailed(
            error.detail, code=error.code, errors=[{"field": field, "message": error.detail}]
        ) from None


def format_amount(amount_minor: int, currency: str) -> str:
    """Render integer minor units as a decimal string with exactly the currency's digits.

    ``format_amount(1050, "SGD") == "10.50"``; ``format_amount(-5, "SGD") == "-0.05"``;
    ``format_amount(1200, "JPY") == "1200"``.

    Args:
        amount_minor: any integer (negative for a system wallet's balance).
        currency: an ISO 4217 code.

    Raises:
        UnknownCurrency: ``currency`` is not ISO 4217.
    """
    exponent = exponent_of(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    if exponent == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{exponent}d}"
