"""`recsys plugin new NAME` writes a package whose own tests (the model contract) pass as written."""

import os
import re
import subprocess
import sys

import pytest

from recsys.cli import main
from recsys.scaffold import names


def test_generated_plugin_passes_its_own_tests(tmp_path, capsys):
    assert main(["plugin", "new", "recsys-my-model", "--dir", str(tmp_path)]) == 0
    assert "model MyModel, metric my_model_precision" in capsys.readouterr().out
    root = tmp_path / "recsys-my-model"
    assert (root / "pyproject.toml").read_text().count('recsys_my_model = "recsys_my_model.plugin"') == 1
    # No install needed: the package is importable from its folder.
    env = {**os.environ, "PYTHONPATH": str(root), "RECSYS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "11 passed" in result.stdout  # contract (8), metric (2)... and the converter's two
    assert (root / "tests" / "fixtures" / "events" / "events.tsv").is_file()


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "recsys-x").mkdir()
    assert main(["plugin", "new", "recsys-x", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name, model, expected", [
    ("recsys-item-knn", None, ("recsys_item_knn", "ItemKnn", "item_knn_precision")),
    ("recsys-Fancy.Rec", "FancyRec", ("recsys_fancy_rec", "FancyRec", "fancy_rec_precision")),
])
def test_names(name, model, expected):
    values = names(name, model)
    assert (values["package"], values["model"], values["metric"]) == expected


@pytest.mark.parametrize("name, model, message", [
    ("recsys", None, "'recsys': name plugin distributions recsys-<something> (e.g. recsys-recsys)"),
    ("my-knn", None, "'my-knn': name plugin distributions recsys-<something> (e.g. recsys-my-knn)"),
    ("2fast", None, "'2fast' is not a distribution name"),
    ("recsys-llm", None, "'recsys-llm' would make a package named 'recsys_llm': choose another name"),
    ("recsys-ok", "not-a-class", "'not-a-class' is not a Python class name"),
])
def test_bad_names_are_refused(name, model, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        names(name, model)
