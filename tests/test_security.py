"""Security properties, checked for real: files from outside never run code when read.

- Checkpoints load tensors and plain values only (``weights_only=True``): a crafted pickle
  that would run code is refused by ``RecModule.load_from_checkpoint`` and by ``recsys
  test --ckpt_path`` (before and while Lightning reads it), and the code never runs.
- ``trust_remote_code`` is off unless a caller turns it on: a model directory whose config
  asks for its own Python code is refused and the code is never imported.
- Plugins come from installed entry points only: a model, config or allow-list given as a
  file path never imports that file.
- Config strings are never evaluated: YAML is read with a safe loader.
- A scan of every Python file (core, plugins/, examples/, benchmarks/, tests/) for unsafe
  loading (``torch.load`` without ``weights_only=True``, pickle, ``eval``/``exec``,
  ``trust_remote_code=True``, unsafe YAML, ``shell=True``, imports from file paths or from
  non-constant names) finds nothing outside a short allow-list, each entry with its reason.
"""

from __future__ import annotations

import ast
import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"


class _Payload:
    """Unpickling this creates ``marker`` (a directory): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A Lightning-shaped checkpoint of Pop with one extra entry that runs ``os.mkdir`` when unpickled."""
    from recsys.models.pop import Pop

    marker = tmp_path / "code-ran"
    model = Pop(num_items=9)
    checkpoint = {
        "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2.6.0",
        "recsys_class_path": "recsys.models.pop.Pop", "epoch": 0, "global_step": 0, "loops": {},
        "surprise": _Payload(marker),
    }
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def test_the_crafted_checkpoint_really_runs_code_when_fully_unpickled(tmp_path):
    # The control: without weights_only the payload runs, so the refusals below mean something.
    path, marker = crafted_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_load_from_checkpoint_refuses_a_crafted_pickle(tmp_path):
    import pickle

    from recsys.models.base import RecModule

    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="posix.mkdir|os.mkdir"):
        RecModule.load_from_checkpoint(path)
    assert not marker.exists()


def test_recsys_test_ckpt_path_refuses_a_crafted_pickle_with_one_line(tmp_path):
    from recsys.cli import main

    path, marker = crafted_checkpoint(tmp_path)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["test", "--model=Pop", "--data=SeqDataModule", f"--data.path={TINY}", f"--ckpt_path={path}",
                     f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"])
    assert code == 2
    assert not marker.exists()
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("recsys: error: refused to load a checkpoint") and "mkdir" in last, err.getvalue()[-500:]


def test_ckpt_path_is_read_weights_only_by_default(capsys):
    """Lightning 2.6 passes weights_only=False to torch.load for http(s) checkpoints unless told;
    every recsys subcommand defaults it to True (local files: torch >= 2.6 already does)."""
    from recsys.cli import main

    for subcommand in ("fit", "test"):  # each subcommand parser gets the default the same way
        with pytest.raises(SystemExit):
            main([subcommand, "--model=Pop", "--data=SeqDataModule", f"--data.path={TINY}", "--print_config"])
        assert "weights_only: true" in capsys.readouterr().out, subcommand


# --------------------------------------------------------------------------- trust_remote_code


def remote_code_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model directory whose config.json asks for its own configuration class in Python."""
    marker = tmp_path / "remote-code-ran"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.Evil"},
    }))
    (model / "configuration_evil.py").write_text(
        f"import os\nos.mkdir({str(marker)!r})\nfrom transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    return model, marker


def test_load_backbone_never_runs_a_models_own_code_by_default(tmp_path, monkeypatch):
    import inspect

    from recsys.llm.backbones import load_backbone

    assert inspect.signature(load_backbone).parameters["trust_remote_code"].default is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, marker = remote_code_model(tmp_path)
    with pytest.raises(Exception, match="trust_remote_code"):
        load_backbone(str(model))
    assert not marker.exists()


# --------------------------------------------------------------------------- plugins and configs


def evil_module(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "module-imported"
    path = tmp_path / "evil_plugin.py"
    path.write_text(f"import os\nos.mkdir({str(marker)!r})\nfrom recsys.models.pop import Pop\nclass Evil(Pop):\n    pass\n")
    return path, marker


@pytest.mark.parametrize("how", ["model-as-file-path", "model-as-module-name", "config-file-is-python"])
def test_a_config_never_imports_code_from_a_file_path(how, tmp_path):
    from recsys.cli import main

    path, marker = evil_module(tmp_path)
    args = {
        "model-as-file-path": [f"--model={path}"],
        "model-as-module-name": ["--model=evil_plugin.Evil"],  # not installed: not importable
        "config-file-is-python": [f"--config={path}"],
    }[how]
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit:
        main(["fit", *args, "--data=SeqDataModule", f"--data.path={TINY}", "--print_config"])
    assert exit.value.code != 0
    assert not marker.exists()
    assert "evil_plugin" not in sys.modules
    assert err.getvalue().strip().splitlines()[-1].startswith("recsys: error:")


def test_the_plugin_allow_list_is_names_not_paths(tmp_path, monkeypatch):
    """RECSYS_LOAD_PLUGINS selects installed distributions by name; a file path in it loads nothing."""
    from recsys import plugins

    path, marker = evil_module(tmp_path)
    monkeypatch.setenv("RECSYS_LOAD_PLUGINS", f"{path},{tmp_path}")
    monkeypatch.setattr(sys, "_called_from_test", False, raising=False)
    monkeypatch.setattr(plugins, "_loaded", False)
    before = {name for name, _ in plugins.pm.list_name_plugin()}
    try:
        plugins.load_plugins()  # the real installed distributions, filtered by the allow-list
        after = {name for name, _ in plugins.pm.list_name_plugin()}
        assert after - before <= set(plugins.DEFAULT_PLUGINS)
        assert not marker.exists() and "evil_plugin" not in sys.modules
    finally:
        for name in {name for name, _ in plugins.pm.list_name_plugin()} - before:
            plugins.pm.unregister(name=name)
        monkeypatch.setattr(plugins, "_loaded", True)


def test_yaml_configs_are_read_with_a_safe_loader(tmp_path):
    from recsys.cli import main

    marker = tmp_path / "yaml-ran"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: !!python/object/apply:os.mkdir [{str(marker)!r}]\ndata: SeqDataModule\n")
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit:
        main(["fit", f"--config={config}", "--print_config"])
    assert not marker.exists()
    # refused for the tag itself (a safe loader knows no python/* constructor), not for another reason
    assert exit.value.code == 2
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("recsys: error:") and "could not determine a constructor for the tag" in last, last
    assert "python/object/apply:os.mkdir" in last, last


def test_no_config_turns_on_remote_code_or_unsafe_loading():
    for config in [*ROOT.glob("configs/**/*.yaml"), *ROOT.glob("plugins/*/configs/**/*.yaml"),
                   *ROOT.glob("examples/*/configs/**/*.yaml")]:
        text = config.read_text().lower()
        assert "trust_remote_code: true" not in text, config
        assert "weights_only: false" not in text, config


# --------------------------------------------------------------------------- source scan

#: (file, rule) -> why it is acceptable. Each entry is a reviewed exception, not a blanket pass.
ALLOWED = {
    ("benchmarks/recbole_side.py", "weights_only=False"):
        "runs RecBole's own trainer, whose checkpoints pickle its Config; RecBole's file written by the same process",
    ("benchmarks/recbole_reads_ours.py", "weights_only=False"):
        "the same RecBole shim; no checkpoint is read in that benchmark",
    ("tests/test_llm.py", "weights_only=False"):
        "reads a checkpoint the test itself just wrote, to inspect what was saved",
    ("tests/test_security.py", "weights_only=False"):
        "the control that shows the crafted checkpoint really runs code when fully unpickled",
    ("tests/test_writing_plugins_doc.py", "exec"):
        "runs the code blocks of docs/writing-plugins.md, the repository's own file, to prove they work",
    ("recsys/models/base.py", "torch.load without weights_only=True"):
        "RecModule.load_from_checkpoint passes its own weights_only argument through (**load), default True",
    ("recsys/plugins.py", "import of a computed name"):
        "imports the built-in DEFAULT_PLUGINS, a constant tuple of recsys modules",
    ("recsys/lazy.py", "import of a computed name"):
        "object_at: module names from the packages' constant _EXPORTS tables (lazy exports), from the "
        "import paths installed plugins register (their own code, trusted like any plugin), and class "
        "paths of a parsed config that jsonargparse has already imported",
    ("recsys/models/base.py", "import of a computed name"):
        "load_from_checkpoint imports the RecModule subclass recorded in the checkpoint (read weights_only); "
        "only importable (installed) modules, and the result must be a RecModule subclass",
}

SCANNED = ["recsys", "plugins", "examples", "benchmarks", "tests", "scripts"]


def _is(node: ast.AST, *names: str) -> bool:
    """``node`` is the dotted name ``names`` (``torch.load`` -> ('torch', 'load'))."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts)) == names


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node, value) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def findings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            for arg, default in zip(args, defaults):
                if arg.arg == "trust_remote_code" and not _const(default, False):
                    found.append((node.lineno, "trust_remote_code default not False"))
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        weights_only = _keyword(node, "weights_only")
        if _is(f, "torch", "load") and not (_const(weights_only, True) or _const(weights_only, False)):
            found.append((node.lineno, "torch.load without weights_only=True"))
        if _const(_keyword(node, "weights_only"), False) or (
                isinstance(f, ast.Attribute) and f.attr == "setdefault" and len(node.args) == 2
                and _const(node.args[0], "weights_only") and _const(node.args[1], False)):
            found.append((node.lineno, "weights_only=False"))
        if any(_is(f, *n) for n in [("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
                                    ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("pd", "read_pickle"),
                                    ("pandas", "read_pickle"), ("cloudpickle", "loads")]):
            found.append((node.lineno, "pickle"))
        if _const(_keyword(node, "allow_pickle"), True):
            found.append((node.lineno, "pickle"))
        if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
            found.append((node.lineno, f.id))
        if _const(_keyword(node, "trust_remote_code"), True):
            found.append((node.lineno, "trust_remote_code=True"))
        if any(_is(f, "yaml", n) for n in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all")):
            loader = _keyword(node, "Loader")
            if loader is None or "Safe" not in ast.unparse(loader):
                found.append((node.lineno, "unsafe yaml"))
        if _const(_keyword(node, "shell"), True) or _is(f, "os", "system") or _is(f, "os", "popen"):
            found.append((node.lineno, "shell"))
        if any(_is(f, *n) for n in [("importlib", "util", "spec_from_file_location"), ("runpy", "run_path"),
                                    ("importlib", "machinery", "SourceFileLoader"), ("spec_from_file_location",)]):
            found.append((node.lineno, "import from a file path"))
        if (_is(f, "importlib", "import_module") or (isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))) \
                and node.args and not isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, "import of a computed name"))
    return found


def python_files():
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not any(part.startswith(".") or part in ("build", "__pycache__") for part in path.relative_to(ROOT).parts):
                yield path


def test_the_scanner_catches_what_it_looks_for():
    code = (
        "import torch, pickle, yaml, subprocess, importlib\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\npickle.loads(b'')\neval('1')\nexec('1')\n"
        "yaml.load('a')\nsubprocess.run('ls', shell=True)\nf(trust_remote_code=True)\n"
        "def g(trust_remote_code=True): pass\nimportlib.import_module(name)\n"
        "torch.load('x', weights_only=True)\nyaml.load('a', Loader=yaml.SafeLoader)\nmodel.eval()\n"
    )
    rules = [rule for _, rule in findings(ast.parse(code))]
    for rule in ("torch.load without weights_only=True", "weights_only=False", "pickle", "eval", "exec", "unsafe yaml",
                 "shell", "trust_remote_code=True", "trust_remote_code default not False", "import of a computed name"):
        assert rule in rules, rule
    assert len(rules) == 10, rules  # the last three lines are safe


def test_no_unsafe_loading_outside_the_allow_list():
    problems, used = [], set()
    files = list(python_files())
    assert len(files) > 50
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        for line, rule in findings(ast.parse(path.read_text(encoding="utf-8"), filename=relative)):
            if (relative, rule) in ALLOWED:
                used.add((relative, rule))
            else:
                problems.append(f"{relative}:{line}: {rule}")
    assert not problems, "\n".join(problems)
    stale = set(ALLOWED) - used
    assert not stale, f"allow-list entries no longer needed: {sorted(stale)}"
