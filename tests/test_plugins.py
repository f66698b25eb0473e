import sys
import types

import pytest
from fake_models import Wordy

import recsys
from recsys import plugins
from recsys.plugins import PluginError, get_metrics, get_models, get_plugins, item_to_text, load_plugins, pm


class FakeEntryPoint:
    def __init__(self, name, load):
        self.name, self.group, self._load = name, "recsys", load

    def load(self):
        return self._load()


class FakeDistribution:
    def __init__(self, name, *entry_points, version="1.2.3"):
        self.metadata = {"Name": name}
        self.version = version
        self.entry_points = list(entry_points)


def module_with(**functions):
    module = types.ModuleType("fake_module")
    for name, fn in functions.items():
        setattr(module, name, fn)
    return module


@recsys.hookimpl
def register_metrics(register):
    register("always_one", lambda ranks, k: ranks.float() * 0 + 1)


@recsys.hookimpl
def register_modles(register):  # misspelled on purpose
    pass


def _boom():
    raise ImportError("No module named 'missing_dependency'")


@pytest.fixture
def installed(monkeypatch):
    """Pretend the given distributions are installed, with entry points loading for real."""
    before = {name for name, _ in pm.list_name_plugin()}

    def install(*distributions):
        monkeypatch.delattr(sys, "_called_from_test", raising=False)
        monkeypatch.setattr(plugins, "installed_distributions", lambda: list(distributions))
        monkeypatch.setattr(plugins, "_loaded", False)
        monkeypatch.setattr(plugins, "_failed", [])
        monkeypatch.setattr(plugins, "_distributions", {})
        load_plugins()

    yield install
    for name, _ in list(pm.list_name_plugin()):
        if name not in before:
            pm.unregister(name=name)


def test_listing_shape_and_defaults(installed):
    installed(FakeDistribution("recsys-good", FakeEntryPoint("good", lambda: module_with(register_metrics=register_metrics))))
    listing = get_plugins()
    assert listing == [{"name": "good", "hooks": ["register_metrics"], "version": "1.2.3", "distribution": "recsys-good"}]
    everything = {p["name"] for p in get_plugins(all=True)}
    assert "recsys.default_plugins.models" in everything
    assert [p["name"] for p in get_plugins(all=True, hook="register_models")] == ["recsys.default_plugins.models"]
    assert "always_one" in get_metrics()
    assert get_metrics()["always_one"].plugin == "good"


def test_broken_plugin_is_skipped_and_listed(installed, capsys):
    installed(
        FakeDistribution("recsys-broken", FakeEntryPoint("broken", _boom)),
        FakeDistribution("recsys-good", FakeEntryPoint("good", lambda: module_with(register_metrics=register_metrics))),
    )
    err = capsys.readouterr().err
    assert err.strip() == ("recsys: skipped plugin 'broken' (dist recsys-broken): "
                           "ImportError: No module named 'missing_dependency'")
    listing = {p["name"]: p for p in get_plugins()}
    assert listing["broken"]["error"] == "ImportError: No module named 'missing_dependency'"
    assert "error" not in listing["good"]
    assert "SASRec" in get_models()  # the engine still works


def test_misspelled_hook_is_caught(installed, capsys):
    installed(FakeDistribution("recsys-typo", FakeEntryPoint("typo", lambda: module_with(register_modles=register_modles))))
    assert "unknown hook 'register_modles'" in capsys.readouterr().err
    assert pm.get_plugin("typo") is None


def test_strict_mode_makes_a_broken_plugin_fatal(installed, monkeypatch):
    monkeypatch.setenv("RECSYS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken' .*recsys-broken.* failed to load"):
        installed(FakeDistribution("recsys-broken", FakeEntryPoint("broken", _boom)))


@pytest.mark.parametrize("allow, expected", [(None, {"a", "b"}), ("", set()), ("recsys_b", {"b"})])
def test_load_plugins_allow_list(installed, monkeypatch, allow, expected):
    if allow is not None:
        monkeypatch.setenv("RECSYS_LOAD_PLUGINS", allow)
    installed(
        FakeDistribution("recsys-a", FakeEntryPoint("a", lambda: module_with())),
        FakeDistribution("recsys-b", FakeEntryPoint("b", lambda: module_with())),
    )
    assert {p["name"] for p in get_plugins()} == expected


def test_fake_plugin_visible_then_gone(fake_plugin):
    assert get_models()["OracleRec"].plugin == "fake-plugin"


def test_fake_plugin_gone_after_unregister():
    assert "OracleRec" not in get_models()


class Clash:
    __name__ = "clash"

    @recsys.hookimpl
    def register_metrics(self, register):
        register("ndcg", lambda ranks, k: ranks.float())


def test_duplicate_names_name_both_registrants():
    pm.register(Clash(), name="clash")
    try:
        with pytest.raises(PluginError) as error:
            get_metrics()
        message = str(error.value)
        assert "register_metrics: name 'ndcg' is registered twice" in message
        assert "plugin 'clash' (test_plugins.Clash.register_metrics.<locals>.<lambda>)" in message
        assert "plugin 'recsys.default_plugins.metrics' (recsys.metrics.ndcg)" in message
    finally:
        pm.unregister(name="clash")


class Invalid:
    __name__ = "invalid"

    @recsys.hookimpl
    def register_models(self, register):
        register(object)


def test_invalid_registration_names_the_plugin():
    pm.register(Invalid(), name="invalid")
    try:
        with pytest.raises(PluginError, match="plugin 'invalid' registered an invalid entry in register_models"):
            get_models()
    finally:
        pm.unregister(name="invalid")


def test_firstresult_plugin_wins_over_default(tiny_data):
    default = item_to_text({"movie_title": "Alpha Quest", "release_year": "1991", "class": "Action"}, "tiny")
    assert default == "title: Alpha Quest; year: 1991; genres: Action"
    pm.register(Wordy(), name="wordy")
    try:
        from recsys.llm.templates import render_items

        assert render_items(tiny_data.catalog)[1] == "[tiny] Alpha Quest"  # the "default" template is the hook
        assert item_to_text({"movie_title": "X"}, "other") == "title: X"  # None -> falls through
    finally:
        pm.unregister(name="wordy")


def test_hookimpl_with_unknown_argument_is_rejected():
    class Bad:
        @recsys.hookimpl
        def register_models(self, register, num_items):
            pass

    with pytest.raises(Exception, match="num_items"):
        pm.register(Bad(), name="bad")


def test_public_api_is_complete_and_lazy():
    import subprocess

    assert set(recsys.__all__) == set(recsys._EXPORTS) | {"API_VERSION", "HOOKSPEC_VERSION", "hookimpl"}
    for name in recsys.__all__:
        assert getattr(recsys, name) is not None
    # `import recsys` (what a plugin does first) must not import torch or Lightning.
    code = "import sys, recsys; print('torch' in sys.modules, 'lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["False", "False"]


def test_plugin_registering_something_invalid_is_skipped_at_load(installed, capsys):
    def bad_metrics(register):
        register("coverage", None)

    bad = recsys.hookimpl(bad_metrics)
    bad.__name__ = "register_metrics"
    installed(FakeDistribution("recsys-bad", FakeEntryPoint("bad", lambda: module_with(register_metrics=bad))))
    assert "skipped plugin 'bad'" in capsys.readouterr().err
    assert "hit" in get_metrics()  # lookups still work
    assert "must be callable" in {p["name"]: p for p in get_plugins()}["bad"]["error"]


def test_entry_point_name_clash_is_reported_and_allow_list_applies_first(installed, monkeypatch, capsys):
    first = FakeDistribution("recsys-a", FakeEntryPoint("metrics", lambda: module_with()))
    second = FakeDistribution("recsys-b", FakeEntryPoint("metrics", lambda: module_with(register_metrics=register_metrics)))
    monkeypatch.setenv("RECSYS_LOAD_PLUGINS", "recsys-b")
    installed(first, second)
    assert "always_one" in get_metrics()
    assert capsys.readouterr().err == ""


def test_entry_point_name_clash_names_both_distributions(installed, capsys):
    installed(FakeDistribution("recsys-a", FakeEntryPoint("metrics", lambda: module_with())),
              FakeDistribution("recsys-b", FakeEntryPoint("metrics", lambda: module_with())))
    assert "skipped plugin 'metrics' (dist recsys-b): entry point name 'metrics' is also used by recsys-a" in capsys.readouterr().err


def declaring(**ranges):
    """An entry point whose module declares engine version ranges (RECSYS_API, RECSYS_HOOKSPEC)."""
    return lambda: module_with(register_metrics=register_metrics, **ranges)


def test_plugin_inside_its_declared_ranges_loads(installed, capsys):
    api = f">={recsys.API_VERSION},<{int(recsys.API_VERSION.split('.')[0]) + 1}"
    current = declaring(RECSYS_API=api, RECSYS_HOOKSPEC=f"=={recsys.HOOKSPEC_VERSION}")
    installed(FakeDistribution("recsys-current", FakeEntryPoint("current", current)))
    assert capsys.readouterr().err == ""
    assert get_metrics()["always_one"].plugin == "current"


def test_plugin_outside_its_declared_range_is_skipped_with_one_line(installed, capsys):
    installed(FakeDistribution("recsys-future", FakeEntryPoint("future", declaring(RECSYS_API=">=2,<3"))))
    message = f"needs recsys API >=2,<3 (its RECSYS_API); this engine has API {recsys.API_VERSION}"
    assert capsys.readouterr().err == f"recsys: skipped plugin 'future' (dist recsys-future): PluginError: {message}\n"
    assert "always_one" not in get_metrics()
    assert {p["name"]: p for p in get_plugins()}["future"]["error"] == f"PluginError: {message}"


def test_hookspec_range_is_checked_too(installed, capsys):
    installed(FakeDistribution("recsys-old", FakeEntryPoint("old", declaring(RECSYS_HOOKSPEC="<1.1"))))
    assert f"needs recsys hookspec <1.1 (its RECSYS_HOOKSPEC); this engine has hookspec {recsys.HOOKSPEC_VERSION}" in (
        capsys.readouterr().err)


def test_strict_mode_makes_a_version_mismatch_fatal(installed, monkeypatch):
    monkeypatch.setenv("RECSYS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'future' \(distribution recsys-future\) failed to load: "
                                          r"needs recsys API >=2,<3"):
        installed(FakeDistribution("recsys-future", FakeEntryPoint("future", declaring(RECSYS_API=">=2,<3"))))


@pytest.mark.parametrize("declared", ["1.2", ">=one", "", 12])
def test_malformed_range_is_a_clear_error(installed, capsys, declared):
    installed(FakeDistribution("recsys-typo", FakeEntryPoint("typo", declaring(RECSYS_API=declared))))
    assert (f"skipped plugin 'typo' (dist recsys-typo): PluginError: RECSYS_API = {declared!r} is not a version "
            "range (write e.g. '>=1.1,<2')") in capsys.readouterr().err
    assert pm.get_plugin("typo") is None


def test_registering_by_hand_checks_the_declared_range_too():
    from recsys.testing import registered

    with pytest.raises(PluginError, match="needs recsys API >=2"), registered(module_with(RECSYS_API=">=2")):
        pass
    assert pm.get_plugin("fake_module") is None


def test_backbone_sources_are_typed_and_old_fields_still_read_with_a_warning():
    from recsys.plugins import BackboneSource, get_backbones

    tiny = get_backbones()["tiny-llama"]
    assert isinstance(tiny, BackboneSource)
    assert (tiny.hub_id, tiny.local, tiny.install, tiny.plugin) == (None, None, None, "recsys.default_plugins.backbones")
    assert callable(tiny.build)
    minilm = get_backbones()["all-minilm-l6-v2"]
    with pytest.warns(DeprecationWarning, match=r"\.hub_id"):
        assert minilm.obj == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.warns(DeprecationWarning, match=r"\.local, \.build, \.install"):
        extra = minilm.extra
    assert extra["local"] is minilm.local and extra["install"] == minilm.install and extra["build"] is None
    with pytest.raises(TypeError):
        extra["local"] = None  # read-only
    with pytest.raises(AttributeError):
        minilm.hub_id = "other/model"  # frozen


class SameBackboneName:
    __name__ = "same-backbone-name"

    @recsys.hookimpl
    def register_backbones(self, register):
        register("tiny-llama", None, build=lambda: (None, None))


def test_duplicate_backbone_names_name_both_registrants():
    pm.register(SameBackboneName(), name="same-backbone-name")
    try:
        with pytest.raises(PluginError, match=r"register_backbones: name 'tiny-llama' is registered twice: "
                                              r"by plugin 'same-backbone-name' \(test_plugins\.SameBackboneName.*"
                                              r"and by plugin 'recsys.default_plugins.backbones' \(recsys\.llm\.tiny\.tiny_llama\)"):
            recsys.get_backbones()
    finally:
        pm.unregister(name="same-backbone-name")


class Grounders:
    __name__ = "grounders"

    def __init__(self, cls):
        self.cls = cls

    @recsys.hookimpl
    def register_grounders(self, register):
        register(self.cls)


def test_grounders_must_subclass_grounder():
    class NotAGrounder:
        def ground(self, outputs, k):
            pass

    class Subclass(recsys.ExactTitleGrounder):
        pass

    pm.register(Grounders(Subclass), name="grounders")
    try:
        assert recsys.get_grounders()["Subclass"].plugin == "grounders"
    finally:
        pm.unregister(name="grounders")
    pm.register(Grounders(NotAGrounder), name="grounders")
    try:
        with pytest.raises(PluginError, match="register_grounders expects a subclass of recsys.Grounder"):
            recsys.get_grounders()
    finally:
        pm.unregister(name="grounders")


def test_a_plugin_reusing_a_built_in_name_is_refused_at_load_and_others_keep_working():
    """Loading checks names against every plugin loaded so far (the built-ins first): the
    newcomer is refused with both registrants named, nothing of it stays, lookups still work."""
    from recsys.plugins import register_plugin

    load_plugins()
    with pytest.raises(PluginError) as error:
        register_plugin(Clash(), "clash")
    message = str(error.value)
    assert "register_metrics: name 'ndcg' is registered twice" in message
    assert "plugin 'recsys.default_plugins.metrics'" in message and "plugin 'clash'" in message
    assert pm.get_plugin("clash") is None
    assert get_metrics()["ndcg"].plugin == "recsys.default_plugins.metrics"
