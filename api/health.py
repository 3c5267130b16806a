"""Liveness, readiness and metrics: no key needed."""

from __future__ import annotations

import functools

import redis
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from shared import db
from shared.config import get_settings

blueprint = Blueprint("health", __name__)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url, socket_timeout=1, socket_connect_timeout=1
    )


@blueprint.get("/healthz")
def healthz() -> Response:
    """Answer 200 while the process is up."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Answer 200 when PostgreSQL and Redis both answer, else 503, naming each check."""
    checks = {"database": "ok", "broker": "ok"}
    try:
        with db.transaction() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        checks["database"] = "unavailable"
    try:
        _redis().ping()
    except Exception:
        checks["broker"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )


@blueprint.get("/metrics")
def metrics() -> Response:
    """Expose Prometheus metrics in the text format."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
