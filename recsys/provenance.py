"""What produced a result: package versions and the git state, saved beside every run's numbers
(``results.json`` of ``recsys fit``, ``run.json`` of ``recsys study``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    """recsys, its main dependencies and every installed recsys plugin distribution."""
    from importlib.metadata import PackageNotFoundError, entry_points, version

    found = {}
    for name in ("recsys-llm", "torch", "lightning", "transformers", "peft", "optuna"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    for ep in entry_points(group="recsys"):
        if ep.dist is not None:
            found[ep.dist.name] = ep.dist.version
    found["python"] = sys.version.split()[0]
    return found


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the checkout at ``root`` and whether the tree had uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))} if commit else {}


