"""Money: parsing and rendering per the ISO 4217 exponent; rejected forms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.errors import InvalidAmount, UnknownCurrency
from shared.ledger.money import AMOUNT_MINOR_MAX, exponent_of, format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("10.50", "SGD", 1050),
        ("10.5", "SGD", 1050),
        ("10", "SGD", 1000),
        ("0.01", "SGD", 1),
        ("1200", "JPY", 1200),
        ("1", "JPY", 1),
        ("10000000000000.00", "SGD", AMOUNT_MINOR_MAX),
        ("1000000000000000", "JPY", AMOUNT_MINOR_MAX),
        ("0.001", "BHD", 1),
    ],
)
def test_parse_amount_accepts_plain_decimals(text: str, currency: str, amount_minor: int) -> None:
    assert parse_amount(text, currency) == amount_minor


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.005", "SGD"),
        ("1.5", "JPY"),
        ("-1", "SGD"),
        ("+1", "SGD"),
        ("0", "SGD"),
        ("0.00", "SGD"),
        ("1e3", "SGD"),
        (" 1", "SGD"),
        ("1 ", "SGD"),
        ("NaN", "SGD"),
        ("Infinity", "SGD"),
        ("1,00", "SGD"),
        ("01", "SGD"),
        ("1.", "SGD"),
        (".5", "SGD"),
        ("", "SGD"),
        ("١", "JPY"),
        ("10000000000000.01", "SGD"),
        ("1000000000000001", "JPY"),
        ("9" * 400, "JPY"),
    ],
)
def test_parse_amount_rejects(text: str, currency: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, currency)


@pytest.mark.parametrize("value", [10, 10.5, None, ["1"]])
def test_parse_amount_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value, "SGD")


@pytest.mark.parametrize("code", ["XXY", "sgd", "SG", "SGDD", ""])
def test_exponent_of_rejects_unknown_codes(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        exponent_of(code)


@pytest.mark.parametrize(("code", "exponent"), [("SGD", 2), ("JPY", 0), ("USD", 2), ("BHD", 3)])
def test_exponent_of_follows_iso_4217(code: str, exponent: int) -> None:
    assert exponent_of(code) == exponent


@pytest.mark.parametrize(
    ("amount_minor", "currency", "text"),
    [(1050, "SGD", "10.50"), (5, "SGD", "0.05"), (-5, "SGD", "-0.05"), (0, "SGD", "0.00"),
     (1200, "JPY", "1200"), (-1200, "JPY", "-1200")],
)  # fmt: skip
def test_format_amount_renders_exact_digits(amount_minor: int, currency: str, text: str) -> None:
    assert format_amount(amount_minor, currency) == text


@given(
    amount_minor=st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX),
    currency=st.sampled_from(["SGD", "JPY", "USD", "EUR", "BHD"]),
)
def test_format_then_parse_round_trips(amount_minor: int, currency: str) -> None:
    assert parse_amount(format_amount(amount_minor, currency), currency) == amount_minor


@given(text=st.text(max_size=24), currency=st.sampled_from(["SGD", "JPY"]))
def test_parse_amount_never_raises_anything_but_invalid_amount(text: str, currency: str) -> None:
    try:
        amount_minor = parse_amount(text, currency)
    except InvalidAmount:
        return
    assert 1 <= amount_minor <= AMOUNT_MINOR_MAX
    # Whatever was accepted renders back to the same value.
    assert parse_amount(format_amount(amount_minor, currency), currency) == amount_minor


@given(
    whole=st.integers(min_value=0, max_value=10**13),
    fraction=st.text(alphabet="0123456789", min_size=3, max_size=6),
)
def test_parse_amount_rejects_excess_fraction_digits(whole: int, fraction: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(f"{whole}.{fraction}", "SGD")
