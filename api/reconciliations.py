"""``/v1/reconciliations`` (ops): start a reconciliation now, read and list runs."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

import broker
from api.auth import current_actor, require_role
from api.render import answer, page
from api.requests import path_id, query
from api.responses import ReconciliationRun, ReconciliationStarted
from api.schemas import ListQuery
from shared import db
from shared.services import reconciliation
from shared.services.api_keys import Role

blueprint = Blueprint("reconciliations", __name__, url_prefix="/v1/reconciliations")


def _run_id(value: str) -> uuid.UUID:
    return path_id(value, not_found_code="reconciliation_not_found")


@blueprint.post("")
@require_role(Role.OPS)
def start() -> Response:
    """Start a reconciliation: 202 ``{"id", "status": "running"}``; a worker runs it.

    The message is published after the run's row commits. If the broker is
    down the answer is still 202 and the run stays ``running`` (the failure
    is logged); the hourly beat reconciliation still runs, and ops may start
    another one.
    """
    with db.transaction() as session:
        run_id = reconciliation.start_reconciliation(session, actor=current_actor())
        broker.send_after_commit(session, broker.reconcile(run_id))
    body = {"id": run_id, "status": "running"}
    return answer(ReconciliationStarted, body, 202, {"Location": f"/v1/reconciliations/{run_id}"})


@blueprint.get("")
@require_role(Role.OPS)
def list_runs() -> Response:
    """List reconciliation runs, newest first."""
    params = query(ListQuery)
    with db.transaction() as session:
        rows, next_cursor = reconciliation.list_runs(
            session, limit=params.limit, cursor=params.cursor
        )
    return page(ReconciliationRun, rows, next_cursor)


@blueprint.get("/<run_id>")
@require_role(Role.OPS)
def get_run(run_id: str) -> Response:
    """Return one reconciliation run."""
    with db.transaction() as session:
        run = reconciliation.get_run(session, _run_id(run_id))
    return answer(ReconciliationRun, run)
