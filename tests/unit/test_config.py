"""Settings: strict parsing that names the variable, and the timeouts docs/architecture.md orders ("Transient failures")."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_settings_parse_currencies_and_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_CURRENCIES", "sgd, JPY")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    settings = Settings()
    assert settings.currencies == ("SGD", "JPY")
    assert settings.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TALLY_CURRENCIES", "SGD,XXY"), ("TALLY_BATCH_SIZE", "0"), ("TALLY_BATCH_SIZE", "many"),
     ("TALLY_LOG_LEVEL", "LOUD"), ("TALLY_PORT", "70000"),
     ("TALLY_LOCK_TIMEOUT_MS", "20000"), ("TALLY_BROKER_VISIBILITY_TIMEOUT_SECONDS", "20")],
)  # fmt: skip
def test_settings_reject_bad_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as error:
        Settings()
    assert variable.lower().removeprefix("tally_") in str(error.value).lower() or "TALLY_" in str(
        error.value
    )
