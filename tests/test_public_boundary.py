"""Plugins live on the public API only: no core module outside it, no underscored core name.

What is public: ``recsys`` (its ``__all__``), ``recsys.llm`` (its ``__all__``), ``recsys.testing``
and ``recsys.pytest_plugin``. Every first-party plugin and the example plugin are checked, code
and tests, so a plugin that needs something private shows up here as a missing extension point.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"recsys", "recsys.llm", "recsys.testing", "recsys.pytest_plugin"}
#: NamedTuple's documented API (``Batch._replace``), not private names.
NAMEDTUPLE_API = {"_replace", "_fields", "_asdict", "_make", "_field_defaults"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in NAMEDTUPLE_API


def defined_names(paths) -> set[str]:
    """Names the files define: functions, methods, classes, assigned globals and attributes."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return names


def core_private_names() -> set[str]:
    """Underscored names the core defines."""
    return {n for n in defined_names((ROOT / "recsys").rglob("*.py")) if _private(n)}


def public_class_private_members() -> set[str]:
    """Underscored members of the public classes (and of their recsys bases): overriding one
    of these is reaching into the engine, whatever the plugin's own names are."""
    import inspect

    import recsys
    import recsys.llm
    import recsys.testing

    members: set[str] = set()
    for module in (recsys, recsys.llm, recsys.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if not inspect.isclass(value):
                continue
            for cls in value.__mro__:
                if cls.__module__.startswith("recsys"):
                    members |= {m for m in vars(cls) if _private(m)}
    return members


def plugin_files() -> list[Path]:
    return sorted(p for folder in ("plugins", "examples") for p in (ROOT / folder).rglob("*.py")
                  if ".venv" not in p.parts and "build" not in p.parts)


def own_names(path: Path) -> set[str]:
    """Names the plugin that holds ``path`` defines itself (its own privates are its business)."""
    parts = path.relative_to(ROOT).parts
    folder = ROOT.joinpath(*parts[:2]) if parts[0] in ("plugins", "examples") and len(parts) > 2 else path.parent
    return defined_names(folder.rglob("*.py"))


def violations(path: Path, core_private: set[str], overridable: set[str] | None = None) -> list[str]:
    """Each private use in ``path``, as ``file:line: what``."""
    overridable = public_class_private_members() if overridable is None else overridable
    foreign = core_private - own_names(path)
    found = []
    where = path.relative_to(ROOT)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module in PUBLIC_MODULES:
                modules += [f"{node.module}.{alias.name}" for alias in node.names if _private(alias.name)]
        for module in modules:
            if (module == "recsys" or module.startswith("recsys.")) and module not in PUBLIC_MODULES:
                found.append(f"{where}:{node.lineno}: imports {module}")
        if isinstance(node, ast.Attribute) and (node.attr in foreign or node.attr in overridable):
            found.append(f"{where}:{node.lineno}: uses core private name .{node.attr}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in overridable:
            found.append(f"{where}:{node.lineno}: overrides core private method {node.name}()")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "recsys" \
                and (node.attr not in PUBLIC_ATTRS):
            found.append(f"{where}:{node.lineno}: uses recsys.{node.attr}, which is not in recsys.__all__")
    return found


def _public_attrs() -> set[str]:
    import recsys

    return set(recsys.__all__) | {"llm", "testing", "pytest_plugin", "__version__"}


PUBLIC_ATTRS = _public_attrs()


def test_no_plugin_reaches_for_a_private_core_name():
    core_private = core_private_names()
    assert {"_evaluate", "_is_dense", "_loader"} <= core_private  # the scan sees the core
    overridable = public_class_private_members()
    assert {"_evaluate", "_is_dense", "_loader"} <= overridable
    found = [v for path in plugin_files() for v in violations(path, core_private, overridable)]
    assert not found, "plugins must use the public API (recsys, recsys.llm, recsys.testing):\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from recsys.lightning_cli import run_cli\n", "imports recsys.lightning_cli"),
    ("import recsys.eval\n", "imports recsys.eval"),
    ("class M:\n    def _evaluate(self, batch, stage):\n        pass\n", "overrides core private method _evaluate()"),
    ("def f(model):\n    return model._is_dense()\n", "uses core private name ._is_dense"),
    ("def f(data):\n    return data._loader(None, 1, True)\n", "uses core private name ._loader"),
    ("import recsys\nrecsys.registry\n", "uses recsys.registry, which is not in recsys.__all__"),
    ("from recsys.llm import _private_helper\n", "imports recsys.llm._private_helper"),
])
def test_the_scan_catches_each_kind_of_private_use(tmp_path, source, expected):
    plugin = ROOT / "plugins" / "_scan_probe.py"  # inside the tree, so paths print as they would
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = violations_of_text(source, plugin, core_private_names())
    assert any(expected in v for v in found), found
    clean = "import recsys\nimport recsys.testing\nfrom recsys.llm import response_loss\nrecsys.SeqRecModule\nb._replace(seen=None)\n"
    assert violations_of_text(clean, plugin, core_private_names()) == []


def violations_of_text(source: str, as_path: Path, core_private: set[str]) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory(dir=ROOT / "plugins") as folder:
        path = Path(folder) / as_path.name
        path.write_text(source)
        return violations(path, core_private)
