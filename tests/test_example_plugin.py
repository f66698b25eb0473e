"""The real third-party path: pip-install examples/recsys-example-plugin into this environment,
then find, list and train it through the `recsys` command in subprocesses (entry points for real)."""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.testing import tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "recsys-example-plugin"
DISTRIBUTION = "recsys-example-plugin"


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DISTRIBUTION)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session")
def example_plugin():
    """Installed (editable, no dependencies) for the session; uninstalled after unless it was already there."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not available in this environment, so the example plugin cannot be installed")
    pip = [sys.executable, "-m", "pip"]
    was_installed = _installed()
    install = [*pip, "install", "-q", "--no-deps", "-e", str(EXAMPLE)]
    if importlib.util.find_spec("setuptools") is not None:
        install.append("--no-build-isolation")  # build with the setuptools here: no download
    result = subprocess.run(install, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"pip could not install the example plugin:\n{result.stdout}{result.stderr}"
    yield
    if not was_installed:
        subprocess.run([*pip, "uninstall", "-q", "-y", DISTRIBUTION], capture_output=True, timeout=300, check=False)


def recsys_command(*args, tmp_path):
    """Run `recsys ARGS` as a user would: a new process, plugins loaded from entry points."""
    script = shutil.which("recsys", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "recsys.cli"]
    env = {**os.environ, "RECSYS_CACHE": str(tmp_path / "cache"), "RECSYS_STRICT_PLUGINS": "1",
           # Only this distribution: whatever else is installed here cannot change the result.
           "RECSYS_LOAD_PLUGINS": DISTRIBUTION}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)


def test_recsys_plugins_lists_the_installed_example(example_plugin, tmp_path):
    result = recsys_command("plugins", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {"name": "recsys_example_plugin", "hooks": ["register_metrics", "register_models"], "version": "0.1.0",
              "distribution": DISTRIBUTION}
    assert json.loads(result.stdout) == [listed]


def test_recsys_fit_trains_the_example_model_by_short_name(example_plugin, tmp_path):
    result = recsys_command("fit", "--model", "ItemKNN", "--model.metrics", "[hit, ndcg@10, precision@10]",
                            "--data", "SeqDataModule", "--data.path", str(tiny_dataset()), "--data.max_len", "5",
                            "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
                            "--trainer.enable_progress_bar", "false", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(next((tmp_path / "run").glob("lightning_logs/version_*/results.json")).read_text())["metrics"]
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.startswith(("val/", "test/"))}
    for stage in ("val", "test"):  # the plugin's metric, in the printed table and in results.json
        assert rows[f"{stage}/precision"] == [f"{metrics[f'{stage}/precision@10']:.4g}"]
    config = yaml.safe_load(next((tmp_path / "run").rglob("config.yaml")).read_text())
    assert config["model"]["class_path"] == "recsys_example_plugin.ItemKNN"  # the full path, resolved
