"""The deployment files: docker-compose.yml is valid, the Dockerfile ships the packages that
serve and their runtime dependencies only, and the Prometheus rules load."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.devservers import AUTOVACUUM_NAPTIME

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tally-rules.yml"


def compose_command() -> list[str] | None:
    """Return the Compose client to run: ``docker compose`` (v2), else ``docker-compose``, else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """Return docker-compose.yml as Compose resolves it (``config``), or as validated against the spec.

    Without a Compose client (no docker engine here), the file is validated
    against the Compose specification's JSON schema as check-jsonschema
    vendors it (``--builtin-schema vendor.compose-spec``), then read as YAML.
    """
    command = compose_command()
    if command is None:
        checker = Path(sys.executable).parent / "check-jsonschema"
        done = subprocess.run(
            [str(checker), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
    done = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_compose_runs_the_whole_stack_with_healthchecks_and_restarts(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres", "redis", "migrate", "api", "worker", "webhooks", "beat", "flower"
    }  # fmt: skip
    for name in ("postgres", "redis", "api", "worker", "webhooks", "beat", "flower"):
        assert services[name]["restart"] == "unless-stopped", name
        assert services[name].get("healthcheck"), name
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["command"] == ["tally", "serve", "web"]
    assert services["flower"]["command"] == ["tally", "serve", "flower"]
    assert services["webhooks"]["command"] == ["tally", "serve", "webhooks"]
    redis_args = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_args and "--maxmemory-policy noeviction" in redis_args
    postgres_args = " ".join(services["postgres"]["command"])
    assert f"-c autovacuum_naptime={AUTOVACUUM_NAPTIME}" in postgres_args
    for name in ("api", "worker", "webhooks", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_compose_gives_every_tally_service_the_same_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    tally = ("migrate", "api", "worker", "webhooks", "beat", "flower")
    environments = [services[name]["environment"] for name in tally]
    assert all(env == environments[0] for env in environments)
    assert environments[0]["PROMETHEUS_MULTIPROC_DIR"] == "/metrics"
    assert environments[0]["TALLY_LOG_FORMAT"] == "json"


#: Packages of the repository that serve nothing: left out of the production image.
NOT_IN_IMAGE = {"bench", "examples"}
#: Modules of cli/ that only `tally up`, `tally openapi` and their kind run: they may
#: import the extras (pyproject.toml, `stack` and `dev`); the image never runs them.
DEV_ONLY_MODULES = {"cli/up.py", "cli/devservers.py", "cli/supervise.py", "cli/reaper.py",
                    "cli/openapi.py"}  # fmt: skip


def test_dockerfile_copies_exactly_the_packages_that_serve() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert copied == packages - NOT_IN_IMAGE
    assert re.search(r"^RUN pip install \. ", (ROOT / "Dockerfile").read_text(), re.M), (
        "the image installs the runtime dependencies only, no extras"
    )


def test_the_image_needs_only_the_runtime_dependencies() -> None:
    """Every third-party module the image's code imports comes with a runtime dependency."""
    from importlib.metadata import packages_distributions, requires

    from packaging.requirements import Requirement

    from tests.unit.test_architecture import imported_modules

    runtime = {
        Requirement(line).name.lower().replace("_", "-")
        for line in requires("tally") or []
        if "extra ==" not in line
    }
    # What the runtime dependencies pull in is there too (celery[redis] brings kombu).
    closure, todo = set(), list(runtime)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        with contextlib.suppress(Exception):
            todo += [
                Requirement(line).name.lower().replace("_", "-")
                for line in requires(name) or []
                if "extra ==" not in line
            ]
    distributions = packages_distributions()
    local = {"api", "worker", "shared", "broker", "cli", "tests", *NOT_IN_IMAGE}
    missing = {}
    for package in ("api", "worker", "shared", "broker", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if str(path.relative_to(ROOT)) in DEV_ONLY_MODULES:
                continue
            roots = {name.split(".")[0] for name in imported_modules(path)}
            for root in roots - local - set(sys.stdlib_module_names):
                owners = {d.lower().replace("_", "-") for d in distributions.get(root, [])}
                if not owners & closure:
                    missing[f"{path.relative_to(ROOT)}: {root}"] = owners
    assert missing == {}, "imported by the image's code, not a runtime dependency"


def test_prometheus_rules_are_valid_and_name_real_metrics() -> None:
    from shared import metrics

    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {
        "TallyPendingTooOld", "TallyRetriesExhausted", "TallyReconciliationMismatch",
        "TallyWebhookEndpointDisabled",
    } <= alerts  # fmt: skip
    known = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    for rule in rules:
        for name in re.findall(r"\btally_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in known or name in known, f"{name} in {rule['expr']!r}"
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian's prometheus package)"
        if os.environ.get("CI") == "true":  # .ci/run installs it: its absence is a failure there
            pytest.fail(message)
        print(f"{message}: rules checked as YAML only")
        return
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
