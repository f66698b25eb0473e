"""Registration by import path: listed without importing, imported and checked at first use,
and `recsys plugins` / `recsys models` that import no torch (issue 23, item 4)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import recsys
from recsys.plugins import PluginError, get_grounders, get_metrics, get_models, import_models, pm, register_plugin

MODEL_MODULE = """
import recsys

class Lazy(recsys.NoGradientModule):
    def __init__(self, num_items: int = 0, **kwargs):
        super().__init__(num_items=num_items, **kwargs)

class NotAModel:
    pass

Alias = Lazy

def hits(ranks, k):
    return (ranks <= k).float()
"""


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module ``lazy_mod_<n>`` on sys.path, never imported yet; its name is returned."""
    name = f"lazy_mod_{os.getpid()}_{len(list(tmp_path.iterdir()))}"
    (tmp_path / f"{name}.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def plugin(monkeypatch):
    """Register a module-like object of hook functions as a plugin (checked as at load); removed after."""
    names = []

    def add(name, **hooks):
        module = type(sys)(name)
        for hook_name, fn in hooks.items():
            setattr(module, hook_name, recsys.hookimpl(fn))
        register_plugin(module, name)
        names.append(name)

    yield add
    for name in names:
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)


def test_a_model_registered_by_path_is_listed_without_importing_it(lazy_module, plugin):
    plugin("lazy", register_models=lambda register: register(f"{lazy_module}.Lazy"))
    entry = get_models()["Lazy"]
    assert (entry.path, entry.plugin) == (f"{lazy_module}.Lazy", "lazy")
    assert lazy_module not in sys.modules  # loading and listing imported nothing
    assert entry.obj is sys.modules[lazy_module].Lazy  # first use imports it


def test_import_models_imports_path_registrations_so_the_cli_finds_them(lazy_module, plugin):
    plugin("lazy", register_models=lambda register: register(f"{lazy_module}.Lazy"))
    import_models()
    assert lazy_module in sys.modules


@pytest.mark.parametrize("target, message", [
    ("{m}.NotAModel", "register_models expects a subclass of recsys.RecModule"),
    ("{m}.Missing", "has no attribute 'Missing'"),
    ("{m}_absent.Lazy", "ModuleNotFoundError"),
    ("{m}.Alias", "the class is named 'Lazy'"),
])
def test_a_bad_path_fails_at_first_use_naming_plugin_and_path(lazy_module, plugin, target, message, capsys):
    target = target.format(m=lazy_module)
    plugin("lazy", register_models=lambda register: register(target))
    name = target.rpartition(".")[2]
    with pytest.raises(PluginError) as error:
        _ = get_models()[name].obj
    assert f"plugin 'lazy' registered {name!r} as {target!r}" in str(error.value)
    assert message in str(error.value)
    import_models()  # a run is not broken by it: the model is skipped with one line
    err = capsys.readouterr().err
    assert f"recsys: skipped model {name!r}" in err and message in err


def test_strict_mode_imports_path_registrations_at_load(lazy_module, plugin, monkeypatch):
    monkeypatch.setenv("RECSYS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="register_models expects a subclass"):
        plugin("lazy", register_models=lambda register: register(f"{lazy_module}.NotAModel"))
    assert pm.get_plugin("lazy") is None
    plugin("lazy", register_models=lambda register: register(f"{lazy_module}.Lazy"))
    assert lazy_module in sys.modules


@pytest.mark.parametrize("target", ["Lazy", "lazy mod.Lazy", "pkg..Lazy", "pkg.Lazy."])
def test_a_malformed_path_is_refused_at_load(plugin, target):
    with pytest.raises(PluginError, match="is not an import path"):
        plugin("lazy", register_models=lambda register: register(target))
    assert pm.get_plugin("lazy") is None


def test_metrics_and_grounders_take_paths_too(lazy_module, plugin):
    plugin("lazy", register_metrics=lambda register: register("lazy_hits", f"{lazy_module}.hits"),
           register_grounders=lambda register: register(f"{lazy_module}.Lazy"))
    assert lazy_module not in sys.modules
    assert get_metrics()["lazy_hits"].obj is sys.modules[lazy_module].hits
    with pytest.raises(PluginError, match="register_grounders expects a subclass of recsys.Grounder"):
        _ = get_grounders()["Lazy"].obj


def test_a_path_clashing_with_a_built_in_name_is_refused_at_load(lazy_module, plugin):
    with pytest.raises(PluginError, match="name 'hit' is registered twice") as error:
        plugin("lazy", register_metrics=lambda register: register("hit", f"{lazy_module}.hits"))
    assert "plugin 'recsys.default_plugins.metrics' (recsys.metrics.hit)" in str(error.value)
    assert f"plugin 'lazy' ({lazy_module}.hits)" in str(error.value)
    # the same object registered under the same name, by object and by path, is no clash
    plugin("same", register_metrics=lambda register: register("hit", "recsys.metrics.hit"))


def test_built_ins_are_registered_by_path():
    """Listing the built-ins imports none of their modules (the start-up budget depends on it)."""
    for entry in [*get_models().values(), *get_metrics().values(), *recsys.get_datasets().values(),
                  *get_grounders().values()]:
        if entry.plugin.startswith("recsys.default_plugins"):
            assert isinstance(entry.target, str), f"{entry.name} is registered as an object"


def test_listing_imports_no_torch_with_the_installed_plugins():
    """`recsys plugins` and `recsys models` in a fresh interpreter, with every installed plugin
    loaded (not under pytest, so the first-party ones count): neither imports torch, Lightning,
    transformers or pandas. (`recsys metrics` and `recsys datasets` import to show docstrings.)"""
    script = textwrap.dedent("""
        import contextlib, io, json, sys
        from recsys.cli import main
        listed = {}
        for command in ("plugins", "models"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main([command])
            listed[command] = json.loads(out.getvalue())
        heavy = sorted(m for m in ("torch", "lightning", "transformers", "pandas") if m in sys.modules)
        print(json.dumps({"heavy": heavy, "models": [m["name"] for m in listed["models"]]}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RECSYS_LOAD_PLUGINS", "RECSYS_STRICT_PLUGINS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "SASRec" in result["models"]
    assert result["heavy"] == [], f"listing imported {result['heavy']}"


def test_a_broken_metric_path_breaks_only_the_runs_that_name_it(plugin):
    """A model resolves the metrics it logs, not every registered one."""
    from recsys.models.pop import Pop

    plugin("broken", register_metrics=lambda register: register("broken_metric", "no_such_module_xyz.metric"))
    model = Pop(num_items=5, metrics=["ndcg"], ks=[3])  # built: the broken path is never imported
    assert [logged for logged, _, _ in model.metric_set.entries] == ["ndcg@3"]
    with pytest.raises(PluginError, match="plugin 'broken' registered 'broken_metric' as 'no_such_module_xyz.metric'"):
        Pop(num_items=5, metrics=["broken_metric"], ks=[3])


def test_two_different_instances_under_one_name_still_clash(plugin):
    """Objects are compared by identity: two partials (or two instances of one class) are not
    the same registration just because their type's path is the same."""
    import functools

    from recsys.metrics import hit

    plugin("one", register_metrics=lambda register: register("scaled", functools.partial(hit)))
    with pytest.raises(PluginError, match="name 'scaled' is registered twice"):
        plugin("two", register_metrics=lambda register: register("scaled", functools.partial(hit)))
    with pytest.raises(PluginError, match="name 'scaled' is registered twice"):  # a path against an instance
        plugin("three", register_metrics=lambda register: register("scaled", "recsys.metrics.hit"))


def test_listings_show_a_broken_path_and_still_list_the_rest(plugin, capsys):
    from recsys.cli import main

    plugin("broken", register_metrics=lambda register: register("broken_metric", "no_such_module_xyz.metric"),
           register_datasets=lambda register: register("broken-format", "no_such_module_xyz.convert"))
    assert main(["metrics"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert "No module named 'no_such_module_xyz'" in listed["broken_metric"]["error"]
    assert listed["ndcg"]["doc"] and "error" not in listed["ndcg"]
    assert main(["datasets"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert "error" in listed["broken-format"] and listed["ml-100k"]["doc"]
    assert main(["convert", "--help"]) == 0
    out = capsys.readouterr().out
    assert "broken-format" in out and "(broken: " in out and "ml-100k" in out


def test_lazy_exports_refuses_a_name_its_own_submodule_would_hide():
    with pytest.raises(ValueError, match="rename the module"):
        recsys.lazy_exports("pkg", {"reweight": "pkg.reweight"})
    getattr_, _ = recsys.lazy_exports("pkg", {"reweight": "pkg.reweighting"})  # fine
    assert callable(getattr_)


def test_a_plugin_package_export_is_the_function_after_its_module_was_imported():
    pytest.importorskip("recsys_grounding")
    import recsys_grounding.grounders  # noqa: F401  imports the reweighting module first
    from recsys_grounding import reweight

    assert callable(reweight) and not isinstance(reweight, type(sys))


def test_a_plugin_data_module_resolves_by_short_name_with_lazy_plugin_packages(tiny_path, tmp_path):
    """The engine imports the registered models for `recsys fit`; a plugin's data module must be
    importable by short name too (recsys-grounding's FewShotSeqDataModule), installed plugins loaded."""
    pytest.importorskip("recsys_grounding")
    env = {k: v for k, v in os.environ.items() if k not in ("RECSYS_LOAD_PLUGINS", "RECSYS_STRICT_PLUGINS")}
    done = subprocess.run([sys.executable, "-m", "recsys.cli", "fit", "--model=Pop", "--data=FewShotSeqDataModule",
                           f"--data.path={tiny_path}", "--print_config"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "class_path: recsys_grounding.FewShotSeqDataModule" in done.stdout


def test_fitting_a_model_whose_path_fails_names_the_import_error(lazy_module, plugin, tiny_path, tmp_path, capsys):
    from recsys.testing import run_cli

    plugin("lazy", register_models=lambda register: register(f"{lazy_module}_absent.GoneModel"))
    with pytest.raises(SystemExit):
        run_cli(["fit", "--model=GoneModel", "--data=SeqDataModule", f"--data.path={tiny_path}",
                 f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert f"plugin 'lazy' registered 'GoneModel' as '{lazy_module}_absent.GoneModel'" in err
    assert "ModuleNotFoundError" in err and "Did you mean" not in err


def test_rerankers_are_registered_and_checked_like_grounders(lazy_module, plugin):
    plugin("lazy", register_rerankers=lambda register: register(f"{lazy_module}.Lazy"))
    assert recsys.get_rerankers()["Lazy"].path == f"{lazy_module}.Lazy"
    with pytest.raises(PluginError, match="register_rerankers expects a subclass of recsys.Reranker"):
        _ = recsys.get_rerankers()["Lazy"].obj
