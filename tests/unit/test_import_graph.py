"""The top-level packages import each other without a circle.

Every import counts, a function's own included: an import moved into a
function still makes its package depend on the other one. The layers are
``shared`` and ``broker`` (libraries), ``api`` and ``worker`` (the services),
``cli`` (the ``tally`` command), ``bench`` (measures the product, on top of it).

``broker`` sits between two layers of ``shared``: it uses shared's base
(:data:`SHARED_BASE`: configuration, metrics, Redis, ``shared.db``, the ledger core), and the
rest of ``shared`` uses it (a service says what to send after its commit with
``broker.send_after_commit``, and takes the message names from ``broker``).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from itertools import pairwise
from pathlib import Path

from tests.unit.test_architecture import ROOT, sources

PACKAGES = ("api", "worker", "shared.base", "shared", "broker", "cli", "bench")

#: The modules of shared's base layer, below ``broker`` (the ledger core: configuration checks
#: currencies with it).
SHARED_BASE = (
    "shared.config",
    "shared.metrics",
    "shared.redis_client",
    "shared.db",
    "shared.ledger",
)


def layer_of(module: str) -> str:
    """Return the layer a module belongs to: ``shared.base`` or its top-level package."""
    if any(module == base or module.startswith(f"{base}.") for base in SHARED_BASE):
        return "shared.base"
    return module.split(".")[0]


def layer_sources(package: str) -> list[Path]:
    """Return the source files of a layer (``shared`` without its base, the base alone)."""
    base = [
        path
        for name in SHARED_BASE
        for path in (
            sources(name.replace(".", "/"))
            if (ROOT / name.replace(".", "/")).is_dir()
            else [ROOT / (name.replace(".", "/") + ".py")]
        )
    ]
    if package == "shared.base":
        return base
    if package == "shared":
        return [p for p in sources("shared") if p not in base]
    return sources(package)


def package_imports(package: str) -> dict[str, set[str]]:
    """Return ``{other layer: the modules of package that import it}``.

    ``from shared import db`` counts as an import of ``shared.db``, the base.
    """
    found: dict[str, set[str]] = {}
    for path in layer_sources(package):
        for layer in {layer_of(name) for name in imported_names(path)} & set(PACKAGES) - {package}:
            found.setdefault(layer, set()).add(str(path.relative_to(ROOT)))
    return found


def imported_names(path: Path) -> set[str]:
    """Return what ``path`` imports, ``from package import name`` as ``package.name``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_top_level_packages_import_each_other_without_a_cycle() -> None:
    edges = {package: package_imports(package) for package in PACKAGES}
    try:
        order = list(TopologicalSorter({p: set(e) for p, e in edges.items()}).static_order())
    except CycleError as error:
        cycle = error.args[1]
        hops = [f"{a} -> {b} ({', '.join(sorted(edges[a][b]))})" for a, b in pairwise(cycle)]
        raise AssertionError("import cycle:\n" + "\n".join(hops)) from None
    assert set(order) == set(PACKAGES)


def test_the_libraries_import_no_process_and_nothing_imports_bench() -> None:
    for library in ("shared.base", "shared", "broker"):
        assert not set(package_imports(library)) & {"api", "worker", "cli", "bench"}, library
    for package in ("api", "worker", "shared.base", "shared", "broker", "cli"):
        assert "bench" not in package_imports(package), package
