"""No two modules of pipeflow/ import each other, directly or around a loop.

The graph is read from the source with ``ast``: every ``import`` counts,
also those inside functions (a cycle hidden in a function is still a
cycle); only imports under ``if TYPE_CHECKING:`` are left out, since they
never run. Importing a submodule is an edge to that module, not to the
packages above it; a name taken from a package's ``__init__`` is an edge to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pipeflow"


def _modules() -> dict[str, Path]:
    found = {}
    for file in PACKAGE.rglob("*.py"):
        name = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = file
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _targets(node: ast.AST, package: str, modules: dict[str, Path]) -> list[str]:
    """The pipeflow modules an import statement runs, as the import names them.

    ``import a.b.c`` and ``from a.b import c`` (c a module) name ``a.b.c``: the
    parent packages' ``__init__`` run too, but that is how Python imports any
    submodule, not an edge of its own. ``from a.b import Name`` (Name defined
    in ``a/b/__init__.py``) names ``a.b`` itself: that is an edge, also from
    inside the package.
    """
    if isinstance(node, ast.Import):
        return [_nearest(alias.name, modules) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        return [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _nearest(base, modules)
            for alias in node.names
        ]
    return []


def _nearest(name: str, modules: dict[str, Path]) -> str:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """Module -> the pipeflow modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(file.read_text(encoding="utf-8"))
        skipped = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            for target in _targets(node, package, modules):
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_pipeflow() -> None:
    graph = import_graph()
    assert "pipeflow.stage" in graph and "pipeflow.registry" in graph  # the walk found them
    loops = cycles(graph)
    assert loops == [], "modules importing each other in a loop: " + "; ".join(
        " <-> ".join(group) for group in loops)


def test_the_check_sees_function_local_imports_and_skips_type_checking_ones() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipeflow.session import AgentSession\n"
        "def f():\n    from pipeflow.pipeline import Pipeline\n"
    )
    tree = ast.parse(source)
    skipped = _type_checking_only(tree)
    seen = {t for node in ast.walk(tree) if id(node) not in skipped
            for t in _targets(node, "pipeflow", _modules())}
    assert "pipeflow.pipeline" in seen and "pipeflow.session" not in seen


def test_a_name_from_the_package_init_is_an_edge_a_submodule_is_not() -> None:
    modules = _modules()

    def targets(source: str, package: str = "pipeflow") -> set[str]:
        return {t for node in ast.walk(ast.parse(source)) for t in _targets(node, package, modules)}

    # pipeflow/errors.py importing the package's own names would run pipeflow/__init__,
    # which imports errors: a real cycle, inside the package.
    assert targets("def f():\n    from pipeflow import Pipeline\n") == {"pipeflow"}
    assert targets("from . import Pipeline\n") == {"pipeflow"}
    assert targets("from pipeflow.audio import wav\n") == {"pipeflow.audio.wav"}
    assert targets("import pipeflow.audio.wav\n") == {"pipeflow.audio.wav"}
    graph = import_graph()
    graph["pipeflow.errors"] = {*graph["pipeflow.errors"], "pipeflow"}
    assert any("pipeflow.errors" in group for group in cycles(graph))
