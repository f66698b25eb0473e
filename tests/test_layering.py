"""Layering: the data layer (``recsys.data``) sits below plugins and LLM code.

No module under ``recsys/data`` imports ``recsys.plugins``, ``recsys.registry`` or ``recsys.llm``,
at module level or inside a function, so loading data never loads plugins or touches global
plugin state, and a notebook that only builds a catalog does not scan entry points. The one
exception is the deprecated ``Catalog.render`` shim (until API 2.0), named in :data:`ALLOWED`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import recsys

FORBIDDEN = ("recsys.plugins", "recsys.registry", "recsys.llm")
DATA = Path(recsys.__file__).parent / "data"
#: (file relative to recsys/, enclosing function, imported module): allowed until it is removed.
ALLOWED = {("data/catalog.py", "Catalog.render", "recsys.llm.templates")}


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module an ``ImportFrom`` names, with relative imports resolved against ``package``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def forbidden_imports(source: str, package: str = "recsys.data") -> list[tuple[str, int, str]]:
    """(enclosing function qualname or '', line, module) of every import of a FORBIDDEN module:
    ``import x``, ``from x import y``, ``from recsys import llm``, relative forms and
    ``importlib.import_module('x')`` / ``__import__('x')``, at any depth."""
    found = []

    def forbidden(module: str) -> bool:
        return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)

    def visit(node: ast.AST, scope: list[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = [*scope, node.name]
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                modules = [node.args[0].value]
        for module in modules:
            if forbidden(module):
                found.append((".".join(scope), node.lineno, module))
                break
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(source), [])
    return found


def test_the_checker_finds_every_form_of_import():
    code = ("import recsys.llm\nfrom recsys import registry\nfrom recsys.plugins import pm\n"
            "def f():\n    from recsys.llm.templates import render_items\n"
            "class C:\n    def m(self):\n        import importlib\n        importlib.import_module('recsys.registry')\n"
            "from .. import llm\nfrom ..plugins import pm\n"
            "import recsys.data.atomic\nfrom recsys import data\nfrom recsys.llmish import x\nimport recsys\n")
    assert [(scope, line) for scope, line, _ in forbidden_imports(code, "recsys.data")] == [
        ("", 1), ("", 2), ("", 3), ("f", 5), ("C.m", 9), ("", 10), ("", 11)]


def test_data_imports_no_plugins_registry_or_llm():
    found = set()
    for path in sorted(DATA.rglob("*.py")):
        relative = path.relative_to(DATA.parent)
        package = ".".join(("recsys", *relative.parent.parts))  # what relative imports resolve against
        for scope, line, module in forbidden_imports(path.read_text(), package):
            found.add((relative.as_posix(), scope, module, line))
    unexpected = sorted(f"recsys/{file}:{line}: {scope or '<module>'} imports {module}"
                        for file, scope, module, line in found if (file, scope, module) not in ALLOWED)
    assert not unexpected, "recsys.data must not import the plugin layer or recsys.llm:\n" + "\n".join(unexpected)
    stale = ALLOWED - {(file, scope, module) for file, scope, module, _ in found}
    assert not stale, f"no longer needed, remove from ALLOWED: {stale}"


LOAD_DATA = """
import importlib, pkgutil, sys
import recsys.data
for info in pkgutil.walk_packages(recsys.data.__path__, "recsys.data."):
    importlib.import_module(info.name)
from recsys.data.datamodule import SeqDataModule
from recsys.testing import tiny_dataset
dm = SeqDataModule(path=str(tiny_dataset()), max_len=4)
catalog = dm.catalog
assert len(catalog) == dm.num_items and catalog.titles[1] and catalog.item(1)["item_id"]
dm.setup("fit")
next(iter(dm.train_dataloader()))
print(" ".join(sorted(m for m in sys.modules if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN)))))
"""


def test_loading_data_leaves_plugins_and_llm_unimported():
    code = f"FORBIDDEN = {FORBIDDEN!r}\n{LOAD_DATA}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"imported by loading data: {result.stdout.split()}"
