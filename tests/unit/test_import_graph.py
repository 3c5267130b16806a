"""The top-level packages import each other without a circle.

Every import counts, a function's own included: an import moved into a
function still makes its package depend on the other one. The layers are
``shared`` and ``broker`` (libraries), ``api`` and ``worker`` (the services),
``cli`` (the ``tally`` command), ``bench`` (measures the product, on top of it).
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from itertools import pairwise

from tests.unit.test_architecture import ROOT, imported_modules, sources

PACKAGES = ("api", "worker", "shared", "broker", "cli", "bench")


def package_imports(package: str) -> dict[str, set[str]]:
    """Return ``{other top-level package: the modules of package that import it}``."""
    found: dict[str, set[str]] = {}
    for path in sources(package):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        for root in roots & set(PACKAGES) - {package}:
            found.setdefault(root, set()).add(str(path.relative_to(ROOT)))
    return found


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
    for library in ("shared", "broker"):
        assert not set(package_imports(library)) & {"api", "worker", "cli", "bench"}, library
    for package in ("api", "worker", "shared", "broker", "cli"):
        assert "bench" not in package_imports(package), package
