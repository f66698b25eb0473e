"""Every hook has a docs/plugins.md heading with its exact signature (as datasette tests its docs)."""

import inspect
import re
from pathlib import Path

import pytest

from recsys import hookspecs

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
HOOKS = [name for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and hasattr(fn, "recsys_spec")]


def test_hookspecs_found():
    assert {"register_models", "register_datasets", "register_metrics", "register_grounders", "register_rerankers",
            "register_backbones", "register_item_templates", "item_to_text"} == set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name):
    arguments = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"## {name}({arguments})" in DOCS


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_has_a_one_line_docstring(name):
    doc = getattr(hookspecs, name).__doc__
    assert doc and "\n" not in doc.strip()


def test_no_documented_hook_is_missing_from_the_specs():
    documented = set(re.findall(r"^## (\w+)\(", DOCS, flags=re.M))
    assert documented == set(HOOKS)
