"""Each plugin stands alone: its sdist holds its tests and configs, and those tests run from it.

Plugin tests used to read the monorepo's ``configs/``; a plugin's own sdist could not pass its own
tests. Here every plugin (and the example) is built into an sdist with setuptools, unpacked
outside the repository, and its config tests are run from there (two plugins at a time).
"""

import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")])


def tracked(folder: Path) -> set[str]:
    """Files git tracks under ``folder``, relative to it."""
    out = subprocess.run(["git", "ls-files", "."], cwd=folder, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def build_sdist(plugin: Path, out: Path) -> Path:
    """The plugin's sdist, built by setuptools' PEP 517 backend in this interpreter (no network),
    from a clean copy of its tracked files: in the working tree setuptools would also pack whatever
    an old ``*.egg-info/SOURCES.txt`` lists, hiding a MANIFEST.in that forgets a folder."""
    clean = out / "checkout"
    for name in tracked(plugin):
        (clean / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plugin / name, clean / name)
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = subprocess.run([sys.executable, "-c", code], cwd=clean, capture_output=True, text=True,
                          check=True).stdout.split()[-1]
    return out / name


def test_every_plugin_is_found():
    assert {p.name for p in PLUGINS} >= {"recsys-hllm", "recsys-grounding", "recsys-plora", "recsys-semantic-ids",
                                         "recsys-example-plugin"}


@dataclass
class FromSdist:
    """What one plugin's sdist holds (paths relative to its top folder) and how its config tests
    went when run from it; ``error`` is what stopped the build instead."""
    packed: set[str] = field(default_factory=set)
    run: subprocess.CompletedProcess | None = None
    error: BaseException | None = None


def build_and_test(plugin: Path, out: Path) -> FromSdist:
    """Build ``plugin``'s sdist, unpack it in ``out`` and run its config tests from there, outside
    the repository: nothing reaches back. A plugin without configs has no config tests to run
    (a pytest process that selects nothing still costs about 10 s of imports here)."""
    try:
        sdist = build_sdist(plugin, out)
        with tarfile.open(sdist) as tar:
            top = sdist.name.removesuffix(".tar.gz")
            packed = {name.removeprefix(top + "/") for name in tar.getnames()}
            tar.extractall(out, filter="data")
        if not (plugin / "configs").is_dir():
            return FromSdist(packed)
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                              "-k", "config", "tests"], cwd=out / top, capture_output=True, text=True)
        return FromSdist(packed, run)
    except Exception as error:  # reported by that plugin's test, not by the others'
        return FromSdist(error=error)


@pytest.fixture(scope="module")
def from_sdists(request, tmp_path_factory) -> dict[str, FromSdist]:
    """The selected plugins built and tested from their sdists, two at a time: each is a pytest
    process of its own, so they share only the machine's two cores."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (the list of tracked files)")
    selected = [item.callspec.params["plugin"] for item in request.session.items
                if "from_sdists" in getattr(item, "fixturenames", ())]
    with ThreadPoolExecutor(2) as pool:
        done = pool.map(lambda p: build_and_test(p, tmp_path_factory.mktemp(p.name)), selected)
        return {plugin.name: result for plugin, result in zip(selected, done)}


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_sdist_carries_the_plugins_tests_and_configs_and_they_pass_from_it(plugin, from_sdists):
    result = from_sdists[plugin.name]
    if result.error is not None:
        raise result.error
    own = {f for f in tracked(plugin) if f.startswith(("tests/", "configs/"))}
    assert own, f"{plugin.name} tracks no tests"
    assert own <= result.packed, f"{plugin.name}'s sdist lacks {sorted(own - result.packed)}"
    run = result.run
    if run is not None:  # None: the plugin has no configs, so no config tests
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
