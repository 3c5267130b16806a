"""The Flask intake API: ``create_app()`` builds it; blueprints hold one resource each."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from api import (
    audit,
    dashboard,
    health,
    monitors,
    openapi,
    reconciliations,
    transactions,
    wallets,
)
from api.auth import load_api_key
from api.edge import install_edge
from api.errors import register_error_handlers
from api.events import blueprint as events_blueprint
from api.limits import install_rate_limits
from api.observe import install_observability
from api.webhooks import blueprint as webhooks_blueprint
from shared.config import get_settings
from shared.logs import configure_logging

BLUEPRINTS = [
    health.blueprint,
    wallets.blueprint,
    monitors.blueprint,
    transactions.blueprint,
    reconciliations.blueprint,
    events_blueprint,
    webhooks_blueprint,
    audit.blueprint,
    openapi.blueprint,
    dashboard.blueprint,
]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the API application.

    Args:
        config: Flask config overrides (tests); Tally's own settings come from
            the environment via ``shared.config``.
    """
    settings = get_settings()
    configure_logging(
        settings.log_level, settings.log_format, flush_seconds=settings.web_log_flush_seconds
    )
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(config or {})
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

    # First: every request, even one refused by the hooks below, gets an id and is timed.
    install_observability(app)

    @app.before_request
    def _authenticate() -> None:
        if request.path.startswith("/v1/") or request.path == "/v1":
            load_api_key()

    # After authentication (a 401 counts against nothing), before the body is read.
    install_rate_limits(app)
    # After authentication: an unknown client is answered 401 before its body is read.
    install_edge(app)
    register_error_handlers(app)
    return app
