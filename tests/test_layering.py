"""Layering of the two packages: no import circles in ``spartan_core`` or ``companion``, and the library never
imports the companion (``spartan_core`` must stay usable on its own, without the book's pipeline and its
dependencies).

The import graph is read from the source with :mod:`ast`, so an import that only runs inside a function counts
like one at the top of the file: a circle hidden behind a lazy import is still a circle, it merely fails later.

The rule for an edge. A module is a file; a package is its ``__init__.py``. ``import a.b.c`` and
``from a.b import c`` make the importing module depend on ``a.b.c`` when that is a module (else on ``a.b``), and
also on the packages ``a`` and ``a.b``, whose ``__init__`` Python runs first, except the packages that contain the
importing module: those are already being initialised when it runs. So ``pkg/__init__.py`` importing its own
``pkg.sub`` (re-exporting it) and ``pkg.sub`` importing its sibling ``pkg.other`` are no circle, whereas
``pkg.sub`` naming its own package (``from pkg import name`` or ``from . import name``, ``name`` not a
submodule) depends on ``pkg/__init__.py``, and is in a circle when that ``__init__`` imports ``pkg.sub``: the name
may not exist yet when ``pkg.sub`` runs. A module outside ``pkg`` importing ``pkg.sub`` runs ``pkg/__init__.py``
too, so it is in a circle when that ``__init__`` (through anything it imports) imports it back.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spartan_core", "companion")
LIBRARY = ROOT / "spartan_core"

# Import edges (importer, imported) left out of the circle check, each with the reason it cannot go yet; none now.
# The test fails while an entry is no longer on a circle, so the list cannot go stale.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``a.b.function`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str) -> list[tuple[str, int]]:
    """(imported module, line) of every import in module ``name`` that reaches one of our modules, by the rule of
    the module docstring."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                assert node.level - 1 < len(parts), f"{path}:{node.lineno}: relative import beyond the top level"
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            named += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno)
                      for alias in node.names]
    found = []
    for target, line in named:
        target = _known(target)
        if target is None:
            continue
        parts = target.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        if target != name:
            found.append((target, line))
        found += [(ancestor, line) for ancestor in ancestors
                  if ancestor in MODULES and package != ancestor and not package.startswith(ancestor + ".")]
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line that imports it}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for name in MODULES:
        for target, line in imports(name):
            graph[name].setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components of more than one module: each is one or more import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_through(graph: dict[str, dict[str, int]], start: str) -> list[str]:
    """A shortest import path from ``start`` back to itself (breadth first), ``start`` at both ends."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if target not in parent:
                parent[target] = node
                queue.append(target)
    return []


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(f"{a} ({MODULES[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])) \
        + f" -> {cycle[-1]}"


def without_allowed(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {name: {target: line for target, line in targets.items() if (name, target) not in ALLOWED}
            for name, targets in graph.items()}


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert len(MODULES) > 40, "the walk found too few modules"
    assert "spartan_core.training.loop" in graph["spartan_core.zoo.toys"], "a function-local import is an edge"
    assert "spartan_core.zoo.registry" in graph["spartan_core.zoo.toys"], "a relative import is an edge"
    assert "spartan_core.training" in graph["spartan_core.zoo.toys"], "importing a.b.c runs a.b's __init__"
    assert "spartan_core" not in graph["spartan_core.zoo.toys"], "a module's own package is no dependency"
    assert "spartan_core.zoo" in graph["companion.plan"], "an absolute import is an edge"


def test_there_are_no_import_circles():
    graph = without_allowed(import_graph())
    circles = [describe(graph, cycle_through(graph, component[0])) for component in strongly_connected(graph)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_every_allowed_edge_is_still_an_import_on_a_circle():
    graph = import_graph()
    stale = [edge for edge in sorted(ALLOWED)
             if edge[1] not in graph[edge[0]] or not any(set(edge) <= set(c) for c in strongly_connected(graph))]
    assert not stale, f"remove from ALLOWED (no longer an import on a circle): {stale}"


def test_no_library_file_imports_companion():
    graph = import_graph()
    offenders = sorted({f"{MODULES[name].relative_to(ROOT)}:{line}" for name, targets in graph.items()
                        if name.split(".")[0] == "spartan_core"
                        for target, line in targets.items() if target.split(".")[0] == "companion"})
    assert not offenders, f"the library imports the companion at {', '.join(offenders)}"


def test_importing_every_library_module_leaves_companion_unimported():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import spartan_core
        names = [m.name for m in pkgutil.walk_packages(spartan_core.__path__, "spartan_core.")
                 if m.name != "spartan_core.__main__"]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        print(sorted(m for m in sys.modules if m == "companion" or m.startswith("companion.")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=LIBRARY.parent,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    count, loaded = done.stdout.splitlines()[-2:]
    assert int(count) > 10, "the walk found too few library modules"
    assert loaded == "[]", f"importing spartan_core loaded {loaded}"
