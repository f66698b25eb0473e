"""``RECSYS_TRACE_PLUGINS=1`` traces every hook call, registrations included: a registration
that bypassed pluggy's dispatch (calling ``impl.function`` directly) would not show here."""

import io
import os
import subprocess
import sys

import recsys
from recsys import plugins
from recsys.plugins import get_metrics, item_to_text, load_plugins, pm

PROGRAM = """
import recsys
recsys.get_models()
print(recsys.item_to_text({"title": "Alpha Quest"}, "tiny"))
"""


def test_env_var_traces_registrations_and_item_to_text_with_results():
    env = {**os.environ, "RECSYS_TRACE_PLUGINS": "1", "RECSYS_LOAD_PLUGINS": ""}  # built-ins only
    run = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "title: Alpha Quest\n"
    lines = run.stderr.splitlines()
    assert "recsys trace: register_models(register) -> ['recsys.default_plugins.models']" in lines
    assert "recsys trace: register_models returned []" in lines
    assert "recsys trace: item_to_text(item, dataset) -> ['recsys.default_plugins.text']" in lines
    assert "recsys trace: item_to_text returned 'title: Alpha Quest'" in lines
    assert all(line.startswith("recsys trace: ") for line in lines)


class Traced:
    __name__ = "traced"

    @recsys.hookimpl
    def register_metrics(self, register):
        register("traced_metric", lambda ranks, k: ranks.float())

    @recsys.hookimpl
    def item_to_text(self, item, dataset):
        if dataset == "loud":
            return "x" * 500
        if dataset == "broken":
            raise ValueError("no text for you")
        return None


def _traced(call):
    out = io.StringIO()
    load_plugins()  # the built-ins first, so "traced" is the last registered
    pm.register(Traced(), name="traced")
    stop = plugins._trace_hook_calls(file=out)
    try:
        call()
    finally:
        stop()
        pm.unregister(name="traced")
    return out.getvalue().splitlines()


def test_each_plugin_is_called_and_traced_on_its_own():
    lines = _traced(get_metrics)
    before = [line for line in lines if line.startswith("recsys trace: register_metrics(")]
    # one dispatch per plugin, last registered first (the order pluggy calls them in)
    assert before == ["recsys trace: register_metrics(register) -> ['traced']",
                      "recsys trace: register_metrics(register) -> ['recsys.default_plugins.metrics']"]
    assert lines.count("recsys trace: register_metrics returned []") == 2


def test_a_long_result_is_one_short_line_and_an_error_is_shown():
    lines = _traced(lambda: item_to_text({}, "loud"))
    result = [line for line in lines if line.startswith("recsys trace: item_to_text returned")]
    assert result == ["recsys trace: item_to_text returned '" + "x" * (plugins.TRACE_REPR_CHARS - 13) + "..."]
    lines = _traced(lambda: _raises(lambda: item_to_text({}, "broken")))
    assert "recsys trace: item_to_text raised ValueError: no text for you" in lines


def _raises(call):
    try:
        call()
    except ValueError:
        return
    raise AssertionError("expected ValueError")
