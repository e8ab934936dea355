"""No two modules of the package need each other to finish importing.

The graph is read from the source with :mod:`ast`, not from ``sys.modules``, so
it holds every module, imported by this process or not. An edge ``a -> b``
means that running ``a``'s module body imports ``b``:

- Imports inside functions run when called, not at import time, and those
  under ``if TYPE_CHECKING:`` never run: neither is an edge. Class bodies and
  every other statement at module level are (the ``else:`` of a
  ``TYPE_CHECKING`` test included).
- ``from .x import name`` is an edge to ``x``, and to ``x.name`` when that is
  a module of its own. ``from . import name`` is an edge to the package's
  ``__init__`` only when ``name`` is not a submodule: the importer then reads
  an attribute that the package's ``__init__`` must already have defined.
- Importing ``p.q.m`` first imports its packages ``p`` and ``p.q``: edges to
  them too, except to the importer's own packages. Those were entered before
  the importer itself, and a module never reads from them merely by being
  inside them; so ``pachyderm/__init__.py`` re-exporting ``_app``, which imports
  ``pachyderm._errors``, is no cycle, while ``_app`` reading ``from . import
  Ref`` off the half-initialised package would be one.

A cycle at run time breaks an import or hangs on its order. A cycle of the
imports that only type checkers follow breaks nothing, but still says that two
modules each know the other (an entity type held the app that holds the entity
types): the package keeps none of those either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pachyderm

ROOT = Path(pachyderm.__file__).resolve().parent
Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = ("pachyderm", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(
    body: list[ast.stmt], *, typing: bool
) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module body runs, and with ``typing`` those for type checkers too."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            yield from module_level_imports(node.orelse, typing=typing)
            if typing:
                yield from module_level_imports(node.body, typing=typing)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    inner = (
                        child.body
                        if isinstance(child, ast.ExceptHandler | ast.match_case)
                        else [child]
                    )
                    yield from module_level_imports(inner, typing=typing)


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def targets(
    node: ast.Import | ast.ImportFrom, importer: str, path: Path, known: set[str]
) -> set[str]:
    """The package's modules that ``node`` imports directly."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = package_of(importer, path)
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = node.module if node.level == 0 else ".".join(filter(None, [base, node.module]))
    assert source is not None
    submodules = {f"{source}.{alias.name}" for alias in node.names} & known
    reads_attributes = len(submodules) < len(node.names)
    return submodules | ({source} if node.module or reads_attributes else set())


def with_packages(target: str, importer: str) -> set[str]:
    """``target`` and the packages that importing it enters, other than the importer's own."""
    parts = target.split(".")
    entered = {".".join(parts[:n]) for n in range(1, len(parts))}
    own = {".".join(importer.split(".")[:n]) for n in range(1, importer.count(".") + 1)}
    return {target} | (entered - own)


def import_graph(*, typing: bool = False) -> Graph:
    found = modules()
    known = set(found)
    graph: Graph = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in module_level_imports(tree.body, typing=typing):
            for target in targets(node, name, path, known):
                edges |= with_packages(target, name) & known
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it (the first repeated at the end)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            cycle = visit(successor)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_two_modules_know_each_other_even_for_type_checkers() -> None:
    cycle = find_cycle(import_graph(typing=True))
    assert cycle is None, "import cycle through TYPE_CHECKING: " + " -> ".join(cycle or [])


def test_the_graph_sees_every_kind_of_edge() -> None:
    """The checker itself: it would see the imports a cycle is made of."""
    graph = import_graph()
    assert "pachyderm._errors" in graph["pachyderm._app"]  # from ._errors import ...
    assert "pachyderm._codec" in graph["pachyderm._execution"]  # from . import _codec
    assert "pachyderm.store" in graph["pachyderm._execution"]  # from .store import ...
    assert "pachyderm._app" in graph["pachyderm"]  # a package re-exporting
    assert "pachyderm" not in graph["pachyderm._app"]  # its own package, entered before it
    # ... but read from: `from .. import StoreError` needs pachyderm's __init__ run.
    assert "pachyderm" in graph["pachyderm.testing._store_contract"]
    # A lazily loaded backend is imported inside a function: no edge.
    assert "pachyderm.store._postgres" not in graph["pachyderm.store"]
    # The type checkers' own imports count only when asked for.
    assert "pachyderm.store._postgres" in import_graph(typing=True)["pachyderm.store"]


def test_a_cycle_is_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
