"""docs/writing-plugins.md: its examples implement real hooks with valid arguments, and run."""

import ast
import inspect
import re
import sys
import types
from pathlib import Path

import pytest

from recsys import hookspecs
from recsys.testing import check_model, registered, tiny_dataset

DOC = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL)
SPECS = {name: list(inspect.signature(fn).parameters) for name, fn in vars(hookspecs).items()
         if inspect.isfunction(fn) and hasattr(fn, "recsys_spec")}


def hookimpls(block: str) -> list[ast.FunctionDef]:
    return [node for node in ast.walk(ast.parse(block)) if isinstance(node, ast.FunctionDef)
            and any(ast.unparse(d) == "recsys.hookimpl" for d in node.decorator_list)]


def test_every_registration_hook_is_shown():
    shown = {fn.name for block in BLOCKS for fn in hookimpls(block)}
    assert {name for name in SPECS if name.startswith("register_")} <= shown


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.strip().splitlines()[0][:40])
def test_hookimpls_match_the_hookspecs(block):
    for fn in hookimpls(block):
        assert fn.name in SPECS, f"{fn.name} is not a hook"
        assert {a.arg for a in fn.args.args} <= set(SPECS[fn.name]), f"{fn.name} takes arguments the hook does not give"


@pytest.fixture
def guide(monkeypatch):
    """The guide's self-contained examples (those not importing the example package), as one plugin module."""
    module = types.ModuleType("writing_plugins_guide")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # checkpoints find classes by module path
    for block in BLOCKS:
        if "recsys_knn" not in block and "@recsys.hookimpl" in block:
            exec(compile(block, "docs/writing-plugins.md", "exec"), module.__dict__)  # noqa: S102 (the point)
    with registered(module):
        yield module


def test_the_guide_plugin_registers_and_its_parts_work(guide, tmp_path):
    import recsys

    assert recsys.get_models()["Knn"].obj is guide.Knn
    assert recsys.get_metrics()["knn_precision"].obj is guide.precision
    long_tail = recsys.get_metrics()["knn_long_tail"]
    assert long_tail.obj is guide.long_tail_share and long_tail.extra["kind"] == "list"
    import pytest
    import torch

    from recsys.metrics import ListContext

    popularity = torch.tensor([0.0, 9, 8, 1, 2])  # median of items 1..4: 2
    lists = torch.tensor([[1, 3], [4, 0]])  # listed: 1 (popular), 3 (tail), 4 (not below the median)
    assert guide.long_tail_share(lists, 2, ListContext(4, popularity, 5)).item() == pytest.approx(1 / 3)
    assert "my-encoder" in recsys.get_backbones() and "title-year" in recsys.get_item_templates()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "events.tsv").write_text("user\titem\ttime\n" + "".join(f"u{u}\ti{(u + t) % 5}\t{t}\n"
                                                                  for u in range(4) for t in range(4)))
    out = recsys.get_datasets()["events"].obj(raw, tmp_path / "events")
    assert recsys.SeqDataModule(str(out)).num_items == 5
    catalog = recsys.SeqDataModule(str(tiny_dataset())).catalog
    ids, _ = guide.PrefixGrounder().fit(catalog).ground(["alpha", "nothing"], 2)
    assert catalog.titles[int(ids[0, 0])] == "Alpha Quest" and ids[1].tolist() == [0, 0]
    assert recsys.get_rerankers()["ShortTitleFirst"].obj is guide.ShortTitleFirst
    reranker = guide.ShortTitleFirst()
    reranker.on_catalog(catalog)
    candidates = torch.tensor([[1, 2, 3]])
    order = reranker.score(None, candidates).argsort(descending=True, stable=True)[0].tolist()
    assert [len(catalog.titles[int(candidates[0, i])]) for i in order] == sorted(len(catalog.titles[i]) for i in (1, 2, 3))


def test_the_guide_model_passes_the_contract(guide, tmp_path):
    check_model(guide.Knn, plugin=guide, init_args={"dim": 8}, tmp_path=tmp_path, max_epochs=1,
                learn={"max_epochs": 10, "init_args": {"lr": 0.03}})
