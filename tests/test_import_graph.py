"""The import graph of ``recsys/`` has one cycle, on purpose, and no hidden ones.

The graph is built from the AST of every module: module-level AND function-local imports
(``import x``, ``from x import y``, relative imports resolved; importing ``a.b.c`` also runs
``a`` and ``a.b``). Imports under ``if TYPE_CHECKING:`` never run and are left out; so are
imports by a name held in a string (``importlib.import_module``: the lazy public API and the
plugin manager loading ``DEFAULT_PLUGINS``, which is plugin discovery, as entry points are).
Deprecated alias modules (``sys.modules[__name__] = target``: ``recsys.eval``,
``recsys.registry``) are not nodes: an import of one is an import of its target.

The one cycle allowed is ``recsys.plugins`` <-> ``recsys.models.base``: validating a registered
model class needs ``RecModule`` (``plugins._model``), and ``RecModule.__init__`` resolves its
metric names through the registered metrics (``get_metrics``). Removing it would mean resolving
metrics outside the constructor, an API break not worth making (design review §3). Both edges
are function-local imports, so no import order can meet a partially initialised module.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys"

#: The only strongly connected component of more than one module allowed (see the docstring).
ALLOWED_CYCLE = {"recsys.plugins", "recsys.models.base"}
ALIASES = {"recsys.eval": "recsys.metrics", "recsys.registry": "recsys.plugins"}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (never executed)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(inner) for inner in ast.walk(statement))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """Every recsys module ``name`` imports (with the line), parent packages included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_nodes(tree)
    targets: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets.append((base, node.lineno))
            targets += [(f"{base}.{alias.name}", node.lineno) for alias in node.names
                        if f"{base}.{alias.name}" in modules]
    found = []
    for target, line in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix != name:
                found.append((prefix, line))
    return found


def _aliases(modules: dict[str, Path]) -> dict[str, str]:
    """Modules that replace themselves in ``sys.modules`` -> the module they stand for."""
    aliases = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        replaces = any(isinstance(node, ast.Assign) and "sys.modules[__name__]" in map(ast.unparse, node.targets)
                       for node in tree.body)
        if replaces:
            (target,) = {t for t, _ in _imports(name, path, modules) if t != "recsys"}
            aliases[name] = target
    return aliases


def import_graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported module -> ["file:line", ...]}, aliases resolved to their targets."""
    modules = _modules()
    aliases = _aliases(modules)
    graph: dict[str, dict[str, list[str]]] = {}
    for name, path in modules.items():
        if name in aliases:
            continue
        edges: dict[str, list[str]] = defaultdict(list)
        for target, line in _imports(name, path, modules):
            target = aliases.get(target, target)
            if target != name:
                edges[target].append(f"{path.relative_to(ROOT)}:{line}")
        graph[name] = dict(edges)
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[set[str]]:
    """Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, {}):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _explain(graph, component: set[str]) -> str:
    return "\n".join(f"  {a} -> {b}  ({', '.join(where)})" for a in sorted(component)
                     for b, where in sorted(graph[a].items()) if b in component)


def test_alias_modules_are_found_and_are_not_nodes():
    graph = import_graph()
    assert _aliases(_modules()) == ALIASES
    for alias, target in ALIASES.items():
        assert alias not in graph and target in graph
        assert not any(alias in edges for edges in graph.values())


def test_the_only_cycle_is_plugins_and_models_base():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    unexpected = [c for c in cycles if c != ALLOWED_CYCLE]
    assert not unexpected, "import cycles besides plugins <-> models.base:\n" + "\n\n".join(
        _explain(graph, c) for c in unexpected)


def test_plugins_imports_only_hookspecs_lazy_and_models_base():
    """The plugin module sits at the bottom: it validates grounders without importing
    recsys.grounding (torch, the data layer), imports registrations by path through recsys.lazy,
    and knows nothing of data or LLMs."""
    graph = import_graph()
    assert set(graph["recsys.plugins"]) == {"recsys", "recsys.hookspecs", "recsys.lazy", "recsys.models",
                                            "recsys.models.base"}


def test_the_graph_sees_function_local_and_relative_imports_not_type_checking_ones(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "def f():\n"
        "    import recsys.plugins\n"
        "if TYPE_CHECKING:\n"
        "    from recsys.data import catalog\n")
    known = ["recsys", "recsys.pkg", "recsys.pkg.mod", "recsys.pkg.sibling", "recsys.other", "recsys.plugins",
             "recsys.data", "recsys.data.catalog"]
    found = {target for target, _ in _imports("recsys.pkg.mod", path, dict.fromkeys(known, path))}
    assert found == {"recsys", "recsys.pkg", "recsys.pkg.sibling", "recsys.other", "recsys.plugins"}
    assert "recsys.models.base" in import_graph()["recsys.plugins"]  # function-local, in plugins._model
