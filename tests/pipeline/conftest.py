"""Fixtures for every pipeline test module."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from shared import db


@pytest.fixture(scope="module", autouse=True)
def _no_webhook_endpoints_from_other_modules() -> None:
    """Delete the webhook endpoints earlier test modules left registered, with their deliveries.

    The integration tests register endpoints on closed ports and leave them.
    Each would get a delivery for every transaction a pipeline test makes, and
    the worker would spend its time on refused connections instead of on the
    drains under test.
    """
    with db.transaction() as session:
        session.execute(text("DELETE FROM webhook_endpoints"))
