"""The ops dashboard at ``/``: one static page on the JSON API, and its overview call.

The page (``api/static/dashboard.html``, ``dashboard.js``, ``dashboard.css``,
all shipped in the package) asks for an ops key, keeps it in the tab's
``sessionStorage`` and calls the ``/v1`` API with it as a Bearer key, like any
other client: no cookie, so no session store and no CSRF token (a forged
cross-site request carries no key). The price is that a script injected into
the page could read the key, so the page runs only its own script: its
Content-Security-Policy allows scripts, styles and connections from this
origin only, no inline script, and no framing; the script writes data with
``textContent``, never as HTML. docs/operations.md, "Ops dashboard".

``GET /v1/ops/overview`` (ops) is the one read the API had no call for: the
pending backlog and the last minutes' throughput.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from api.auth import require_role
from shared import db
from shared.rendering import timestamp
from shared.services import overview
from shared.services.api_keys import Role

blueprint = Blueprint("dashboard", __name__)

#: The page runs its own script, style and API calls, nothing else.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Minutes of throughput the overview returns.
THROUGHPUT_MINUTES = 10


@blueprint.get("/")
def page() -> Response:
    """Serve the dashboard's page; it signs in and reads everything over the JSON API."""
    response = current_app.send_static_file("dashboard.html")
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/v1/ops/overview")
@require_role(Role.OPS)
def ops_overview() -> Response:
    """Return the pending backlog and per-minute throughput (ops).

    ``{"pending": {"count", "oldest_age_seconds"}, "throughput": [{"minute",
    "completed", "failed", "other"}, ...]}``: the last ``THROUGHPUT_MINUTES``
    UTC minutes, oldest first, the current one last.
    """
    with db.transaction() as session:
        backlog = overview.pending_backlog(session)
        minutes = overview.throughput(session, minutes=THROUGHPUT_MINUTES)
    return jsonify(
        {
            "pending": {
                "count": backlog.count,
                "oldest_age_seconds": round(backlog.oldest_age_seconds, 3),
            },
            "throughput": [
                {
                    "minute": timestamp(m.minute),
                    "completed": m.completed,
                    "failed": m.failed,
                    "other": m.other,
                }
                for m in minutes
            ],
        }
    )
