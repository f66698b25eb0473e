"""Imports on first use: a package's public names (PEP 562 lazy exports) and objects named by
import path (registrations by path, the classes of a parsed config).

``recsys``, ``recsys.llm`` and ``recsys.study`` list their public names in a constant table
(name -> defining module) and hand it to :func:`lazy_exports`, so ``import recsys`` stays fast
(``recsys --help`` imports no torch) and a package never imports its own modules eagerly (no
import cycle between a package and its modules).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def object_at(path: str) -> Any:
    """The object the import path ``"package.module.Name"`` names, or None when the module has no
    such name; raises ImportError for a module that cannot be imported. The one place recsys
    imports a computed module name (tests/test_security.py lists why each caller may)."""
    module, _, name = str(path).rpartition(".")
    return getattr(importlib.import_module(module), name, None)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``exports`` (public name -> module).

    A name is imported from its module the first time it is read; then every name exported from
    that module is kept on the package. All of them at once, because importing a submodule binds
    it on its package: ``reweight`` exported from ``pkg.reweight`` would otherwise read as the
    submodule once a sibling name from it had been imported.

    A name may not be the name of the package's submodule it comes from (``reweight`` from
    ``pkg.reweight``): importing that submodule from anywhere binds it on the package under
    the same name, which then hides the export. Rename the module."""
    for name, module in exports.items():
        if module == f"{package}.{name}":
            raise ValueError(f"{package}: the export {name!r} comes from the submodule of the same name "
                             f"({module}), which would hide it once imported: rename the module")

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(module)
        for other, where in exports.items():
            if where == module:
                setattr(sys.modules[package], other, getattr(loaded, other))
        return getattr(sys.modules[package], name)

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
