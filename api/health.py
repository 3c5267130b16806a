"""Liveness, readiness and metrics: no key needed."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text

from api.render import answer
from api.responses import Health, Readiness
from shared import db
from shared.config import get_settings
from shared.metrics import DEPENDENCY_UP
from shared.redis_client import get_redis

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Answer 200 while the process is up."""
    return answer(Health, {"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Answer 200 when PostgreSQL and Redis both answer, else 503, naming each check.

    Also sets ``tally_dependency_up{dependency="postgresql"|"redis"}`` to 1 or 0.
    """
    checks = {"database": "ok", "broker": "ok"}
    try:
        with db.transaction() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        checks["database"] = "down"
    try:
        get_redis().ping()
    except Exception:
        checks["broker"] = "down"
    DEPENDENCY_UP.labels("postgresql").set(checks["database"] == "ok")
    DEPENDENCY_UP.labels("redis").set(checks["broker"] == "ok")
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "down", "checks": checks}
    return answer(Readiness, body, 200 if ready else 503)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Expose Prometheus metrics in the text format.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the counts of every process that
    shares it (API workers, the worker's pool) are summed (prometheus-client,
    "Multiprocess Mode"); otherwise this process's own.
    """
    registry = REGISTRY
    if get_settings().prometheus_multiproc_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
