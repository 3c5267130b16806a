"""The architecture stays visible: import direction and one owner of commits."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("shared"), ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_imports_neither_flask_nor_celery_nor_the_processes(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported_modules(path)}
    assert not roots & {"flask", "celery", "kombu", "api", "worker", "cli"}, roots


@pytest.mark.parametrize("path", sources("shared/ledger"), ids=lambda p: str(p.relative_to(ROOT)))
def test_ledger_core_does_no_io(path: Path) -> None:
    roots = {name.split(".")[0] for name in imported_modules(path)}
    assert not roots & {"sqlalchemy", "psycopg", "redis", "structlog", "prometheus_client"}, roots
    allowed_shared = {"shared.ledger", "shared.ledger.errors", "shared.ledger.money",
                      "shared.ledger.states", "shared.ledger.rules"}  # fmt: skip
    assert {n for n in imported_modules(path) if n.startswith("shared")} <= allowed_shared


@pytest.mark.parametrize("path", sources("api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_api_does_not_import_the_worker(path: Path) -> None:
    assert not {n for n in imported_modules(path) if n.split(".")[0] == "worker"}


@pytest.mark.parametrize("path", sources("worker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_worker_does_not_import_flask_or_the_api(path: Path) -> None:
    assert not {n.split(".")[0] for n in imported_modules(path)} & {"flask", "api"}


@pytest.mark.parametrize("path", sources("broker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_broker_imports_neither_flask_nor_the_processes(path: Path) -> None:
    assert not {n.split(".")[0] for n in imported_modules(path)} & {"flask", "api", "worker", "cli"}


@pytest.mark.parametrize("path", sources("broker"), ids=lambda p: str(p.relative_to(ROOT)))
def test_broker_imports_no_service(path: Path) -> None:
    """Services import the broker's names, never the other way round: no import circle."""
    assert not {n for n in imported_modules(path) if n.startswith("shared.services")}


def broker_names() -> set[str]:
    """Return the task and queue names and Redis keys ``broker/`` defines."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / "broker" / "__init__.py").read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.endswith(("_TASK", "QUEUE", "_KEY")):
                names.add(node.value.value)
    return names


def test_broker_names_every_task_and_queue() -> None:
    assert {"tally", "tally.webhooks", "tally.drain", "tally.reconcile"} <= broker_names()


@pytest.mark.parametrize(
    "path",
    [p for package in ("api", "worker", "shared", "cli", "bench") for p in sources(package)],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_message_names_are_written_only_in_broker(path: Path) -> None:
    # "tally" alone is also the Celery app's name and the project's: not looked for.
    names = broker_names() - {"tally"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in names, f"line {node.lineno}: {node.value!r}: use broker's name"


@pytest.mark.parametrize(
    "path",
    [p for package in ("api", "worker", "shared", "cli", "bench") for p in sources(package)],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_only_broker_sends_messages(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"send_task", "apply_async", "delay"}, (
                f"line {node.lineno}"
            )


#: shared/db.py owns transactions; Alembic's env.py owns the migration's own.
COMMIT_OWNERS = {ROOT / "shared" / "db.py", ROOT / "shared" / "migrations" / "env.py"}


@pytest.mark.parametrize(
    "path",
    [p for package in ("api", "worker", "shared", "cli", "broker") for p in sources(package)
     if p not in COMMIT_OWNERS],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_only_shared_db_commits(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in {"commit", "rollback"}, f"line {node.lineno}"


def test_importing_the_services_loads_no_celery() -> None:
    """Services import ``broker``'s names; Celery itself is loaded only to send a message."""
    import subprocess
    import sys

    modules = [
        f"shared.services.{p.stem}" for p in sources("shared/services") if p.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('celery', 'kombu', 'flask') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stderr
