"""Rate limits per role are read strictly from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import Settings


@pytest.mark.parametrize("value", ["1000/second", "60 per minute", "10/minute; 100 per 5 hours"])
def test_rate_limits_accept_limits_notation(value: str) -> None:
    assert Settings(rate_limit_service=value, rate_limit_ops=value).rate_limit_ops == value


@pytest.mark.parametrize("value", ["", "lots", "0/second", "10/fortnight", "-1/minute", "10"])
def test_rate_limits_refuse_anything_else(value: str) -> None:
    with pytest.raises(ValidationError, match="rate_limit_ops"):
        Settings(rate_limit_ops=value)
