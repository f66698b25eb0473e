"""Lazy exports (PEP 562): a package's public names are imported on first use.

``recsys``, ``recsys.llm`` and ``recsys.study`` list their public names in a constant table
(name -> defining module) and hand it to :func:`lazy_exports`, so ``import recsys`` stays fast
(``recsys --help`` imports no torch) and a package never imports its own modules eagerly (no
import cycle between a package and its modules).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``exports`` (public name -> module).

    A name is imported from its module the first time it is read, then kept on the package."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
