import functools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import recsys

from recsys.cli import main
from recsys.lightning_cli import run_cli
from recsys.models.base import RecModule

ROOT = Path(__file__).resolve().parents[1]


def common(tiny_path, tmp_path):
    return [f"--data.path={tiny_path}", "--data.max_len=5", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_oracle_by_short_name_scores_one(fake_plugin, tiny_path, tmp_path):
    cli = run_cli(["test", "--model=OracleRec", "--data=SeqDataModule", *common(tiny_path, tmp_path)])
    metrics = cli.trainer.callback_metrics
    assert metrics["test/ndcg@10"] == 1.0 and metrics["test/hit@5"] == 1.0


def test_num_items_is_linked_from_the_data(fake_plugin, tiny_path, tmp_path):
    cli = run_cli(["--model=OracleRec", "--data=SeqDataModule", *common(tiny_path, tmp_path)], run=False)
    assert cli.model.num_items == cli.datamodule.num_items == 15


def test_fit_trains_then_validates_and_tests_the_best_checkpoint(tiny_path, tmp_path, capsys):
    cli = run_cli(["fit", "--model=SASRec", "--model.max_len=5", "--model.d_model=8", "--model.ffn_dim=16",
                   "--data=SeqDataModule", "--trainer.max_epochs=2", *common(tiny_path, tmp_path)])
    out = capsys.readouterr().out
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    # one short table of both stages, and every value at full precision beside the checkpoint
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    assert results["checkpoint"] == str(best) and results["config"]["model"]["class_path"].endswith("SASRec")
    assert {"torch", "lightning", "recsys-llm"} <= set(results["versions"])
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("metric", "val/", "test/"))}
    column = table["metric"].index("@10")
    for stage in ("val", "test"):
        assert table[f"{stage}/ndcg"][column] == f"{results['metrics'][f'{stage}/ndcg@10']:.4g}"
        assert table[f"{stage}/hit"][column] == f"{results['metrics'][f'{stage}/hit@10']:.4g}"
    assert "┃" not in out  # not Lightning's 17-digit table
    assert best.name.startswith("best-") and (best.parent / "last.ckpt").exists()
    restored = RecModule.load_from_checkpoint(best)
    assert type(restored).__name__ == "SASRec" and restored.num_items == 15
    # the test stage loaded that best checkpoint (not the last epoch's weights) and ran its weights
    assert cli.trainer.ckpt_path is not None and Path(cli.trainer.ckpt_path) == best
    tested = cli.model.state_dict()
    assert all(torch.equal(tested[name], value) for name, value in restored.state_dict().items())
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "recsys.models.sasrec.SASRec"  # full path, not the short name
    assert saved["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val/ndcg@10"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_predict_writes_top_k_per_user(tiny_path, tmp_path, suffix):
    args = ["--model=Pop", "--data=SeqDataModule", *common(tiny_path, tmp_path)]
    run_cli(["fit", *args, "--trainer.max_epochs=1", "--test_after_fit=false"])
    out = tmp_path / f"top{suffix}"
    run_cli(["predict", *args, f"--ckpt_path={next(tmp_path.rglob('last.ckpt'))}",  # Pop took no step: written at the end
             f"--predictions.path={out}", "--predictions.k=3"])
    if suffix == ".csv":
        rows = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
        assert list(rows.columns) == ["user_id", "rank", "item_id", "title", "score"]
        assert rows.groupby("user_id").size().eq(3).all() and rows["user_id"].nunique() == 8
        first = rows[rows.user_id == "1"]
    else:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(lines) == 8 and all(len(line["items"]) == 3 for line in lines)
        first = pd.DataFrame({"item_id": lines[0]["items"], "title": lines[0]["titles"]})
    seen = set(pd.read_csv(tiny_path / "tiny.inter", sep="\t", dtype=str).query("`user_id:token` == '1'")["item_id:token"])
    assert not set(first["item_id"]) & seen  # history masked
    titles = pd.read_csv(tiny_path / "tiny.item", sep="\t", dtype=str).set_index("item_id:token")["movie_title:token_seq"]
    assert list(first["title"]) == [titles[i] for i in first["item_id"]]


def test_print_config_shows_full_class_paths(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/ml-100k/sasrec.yaml"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "recsys.models.sasrec.SASRec"
    assert config["model"]["init_args"]["lr"] == 0.001  # base-class arguments are part of the schema
    assert config["data"]["class_path"] == "recsys.SeqDataModule"


@pytest.mark.parametrize("config", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    assert "class_path" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model=SASRecc", "--data=SeqDataModule", "--print_config"])
    assert "SASRecc" in capsys.readouterr().err


def test_unknown_config_key_is_a_clear_error(tiny_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model=SASRec", "--data=SeqDataModule", "--model.init_args.d_modl=8", "--print_config"])
    assert "d_modl" in capsys.readouterr().err


def test_tool_commands_print_json(capsys):
    assert main(["models"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["SASRec"]["class_path"] == "recsys.models.sasrec.SASRec"
    assert models["Pop"]["plugin"] == "recsys.default_plugins.models"
    assert main(["plugins", "--all"]) == 0
    names = {p["name"] for p in json.loads(capsys.readouterr().out)}
    assert "recsys.default_plugins.metrics" in names
    assert main(["datasets"]) == 0
    assert {"ml-100k", "ml-1m", "ml-latest", "amazon-2014", "amazon-2018", "amazon-2023", "csv"} <= {
        d["name"] for d in json.loads(capsys.readouterr().out)}
    assert main(["--help"]) == 0 and "convert" in capsys.readouterr().out


def test_convert_command_runs_a_registered_converter(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "interactions.csv").write_text("user,item,pos\na,x,0\na,y,1\nb,y,0\nb,x,1\n")
    assert main(["convert", "csv", str(raw), str(tmp_path / "out"), "--user_col=user", "--item_col=item",
                 "--order_col=pos"]) == 0
    assert (tmp_path / "out" / "out.inter").exists()
    assert main(["convert", "nope"]) == 2
    assert "unknown dataset format 'nope'" in capsys.readouterr().err


def test_bad_data_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bad.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tyesterday\n")
    assert main(["fit", "--model=SASRec", "--data=SeqDataModule", f"--data.path={bad}",
                 f"--trainer.default_root_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"recsys: error: {bad / 'bad.inter'}:2: field 'timestamp' is not a number: 'yesterday'")


def test_too_short_histories_are_explained(tmp_path, capsys):
    short = tmp_path / "short"
    short.mkdir()
    (short / "short.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t1\n1\t3\t2\n2\t2\t1\n")
    assert main(["fit", "--model=SASRec", "--data=SeqDataModule", f"--data.path={short}",
                 f"--trainer.default_root_dir={tmp_path}"]) == 2
    assert "no user has 3 or more interactions" in capsys.readouterr().err


def test_monitoring_a_metric_the_model_does_not_log_is_explained(tiny_path, tmp_path, capsys):
    assert main(["fit", "--model=Pop", "--model.metrics=[hit]", "--data=SeqDataModule", *common(tiny_path, tmp_path)]) == 2
    assert "EarlyStopping monitors 'val/ndcg@10', which the model does not log" in capsys.readouterr().err


def test_cross_field_problems_stop_the_run_before_anything_is_built(tiny_path, tmp_path, monkeypatch, capsys):
    from recsys.data.datamodule import SeqDataModule
    from recsys.models.sasrec import SASRec

    built = []
    init = SASRec.__init__

    @functools.wraps(init)  # keeps the signature the parser reads
    def counting_init(self, *args, **kwargs):
        built.append("model")
        init(self, *args, **kwargs)

    monkeypatch.setattr(SASRec, "__init__", counting_init)
    monkeypatch.setattr(SeqDataModule, "load_data", lambda self: built.append("data"))
    code = main(["fit", "--model=SASRec", "--model.max_len=8", "--data=SeqDataModule", f"--data.path={tiny_path}",
                 "--data.max_len=5", "--data.train_stride=6", f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and built == []
    assert err[-1].startswith("recsys: error: ") and "Traceback" not in "\n".join(err)
    # every problem found, in one line, each naming both of its fields
    assert "model.init_args.max_len (8) and data.init_args.max_len (5)" in err[-1]
    assert "data.init_args.train_stride (6) must be in 1..data.init_args.max_len (5)" in err[-1]


def test_a_third_party_class_adds_its_own_cross_field_check(tiny_path, tmp_path, capsys):
    import sys
    import types

    from recsys.models.pop import Pop

    class PickyPop(Pop):
        @classmethod
        def config_problems(cls, model, data):
            return [*super().config_problems(model, data),
                    *(["model.init_args.lr must be 0.5 when data.init_args.batch_size is 3"]
                      if data.get("batch_size") == 3 and model.get("lr") != 0.5 else [])]

    module = types.ModuleType("picky_plugin")
    module.PickyPop = PickyPop
    PickyPop.__module__ = "picky_plugin"
    sys.modules["picky_plugin"] = module
    try:
        code = main(["fit", "--model=picky_plugin.PickyPop", "--data=SeqDataModule", f"--data.path={tiny_path}",
                     "--data.batch_size=3", f"--trainer.default_root_dir={tmp_path}"])
    finally:
        del sys.modules["picky_plugin"]
    assert code == 2
    assert "model.init_args.lr must be 0.5 when data.init_args.batch_size is 3" in capsys.readouterr().err


class BoomMetrics:
    __name__ = "boom-metrics"

    @recsys.hookimpl
    def register_metrics(self, register):
        def boom(ranks, k):
            raise ZeroDivisionError("no users")

        register("boom", boom)
        register("scalar", lambda ranks, k: ranks.float().mean())  # one number, not one per rank


@pytest.mark.parametrize("metric, words", [
    ("boom@10", "metric 'boom' (plugin 'boom-metrics') failed at boom@10: ZeroDivisionError: no users"),
    ("scalar@10", "metric 'scalar' (plugin 'boom-metrics') returned () at scalar@10; expected one value per rank, shape (8,)"),
])
def test_a_plugin_metric_that_fails_is_one_line_naming_metric_and_plugin(tiny_path, tmp_path, capsys, metric, words):
    from recsys.plugins import pm, register_plugin

    register_plugin(BoomMetrics(), "boom-metrics")
    try:
        code = main(["fit", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}",
                     f"--model.metrics=[ndcg@10, {metric}]", f"--trainer.default_root_dir={tmp_path}",
                     "--trainer.enable_progress_bar=false"])
    finally:
        pm.unregister(name="boom-metrics")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"recsys: error: {words}", err[-3:]


def test_recsys_metrics_lists_built_in_and_plugin_metrics(capsys):
    from recsys.plugins import pm, register_plugin

    register_plugin(BoomMetrics(), "boom-metrics")
    try:
        assert main(["metrics"]) == 0
    finally:
        pm.unregister(name="boom-metrics")
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["ndcg"]["function"] == "recsys.metrics.ndcg" and rows["ndcg"]["plugin"] == "recsys.default_plugins.metrics"
    assert rows["boom"]["plugin"] == "boom-metrics" and rows["boom"]["function"].endswith("boom")
    assert rows["ndcg"]["doc"].startswith("1 / log2(rank + 1)")


def test_monitor_moves_checkpoint_and_early_stopping_together(tiny_path, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", "--monitor=val/hit@5", *common(tiny_path, tmp_path),
                   "--trainer.max_epochs=1"])
    watched = {type(c).__name__: (c.monitor, c.mode) for c in cli.trainer.callbacks
               if isinstance(c, (ModelCheckpoint, EarlyStopping)) and c.monitor}  # not the last.ckpt writer
    assert watched == {"ModelCheckpoint": ("val/hit@5", "max"), "EarlyStopping": ("val/hit@5", "max")}
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert [c["init_args"]["monitor"] for c in saved["trainer"]["callbacks"]] == ["val/hit@5", None, "val/hit@5"]


def test_patience_sets_the_default_early_stopping_and_is_saved(tiny_path, tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    config = tmp_path / "patience.yaml"
    config.write_text("patience: 3\n")  # at the top of a config file, as a model's config would set it
    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", f"--config={config}", *common(tiny_path, tmp_path),
                   "--trainer.max_epochs=1"])
    assert [c.patience for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)] == [3]
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["patience"] == 3 and saved["trainer"]["callbacks"][2]["init_args"]["patience"] == 3
    # without it, the CLI's default; a callbacks list of the user's own keeps its patience
    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", *common(tiny_path, tmp_path / "b"), "--trainer.max_epochs=1"])
    assert [c.patience for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)] == [10]
    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", *common(tiny_path, tmp_path / "c"), "--trainer.max_epochs=1",
                   "--trainer.callbacks=lightning.pytorch.callbacks.EarlyStopping", "--trainer.callbacks.monitor=val/ndcg@10",
                   "--trainer.callbacks.mode=max", "--trainer.callbacks.patience=4", "--patience=3"])
    assert [c.patience for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)] == [4]


def test_the_best_epoch_is_read_from_a_custom_named_checkpoint(tmp_path):
    """results.json's best_epoch: from the default ``best-{epoch}`` name, else from the file itself."""
    from recsys.lightning_cli import _epoch_of

    custom = tmp_path / "model-val_ndcg=0.31.ckpt"
    torch.save({"epoch": 4, "global_step": 40, "state_dict": {"w": torch.zeros(3)}}, custom)
    assert _epoch_of(str(custom)) == 4
    assert _epoch_of(str(tmp_path / "best-7.ckpt")) == 7  # the name suffices: the file is not read
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint")
    assert _epoch_of(str(tmp_path / "garbage.ckpt")) is None and _epoch_of(None) is None


def test_a_model_option_on_the_test_command_line_wins_over_the_checkpoint(tiny_path, tmp_path):
    """Lightning rebuilds the model from the checkpoint's hyper-parameters (they replace the
    config's); an option given on the command line is still applied, e.g. the tie rule."""
    fit = run_cli(["fit", "--model=SASRec", "--model.max_len=5", "--model.d_model=8", "--model.ffn_dim=16",
                   "--data=SeqDataModule", "--trainer.max_epochs=1", *common(tiny_path, tmp_path / "fit")])
    best = fit.trainer.checkpoint_callback.best_model_path
    args = ["--model=SASRec", "--data=SeqDataModule", f"--ckpt_path={best}", *common(tiny_path, tmp_path / "test")]
    plain = run_cli(["test", *args])
    assert (plain.model.ties, plain.model.hparams.d_model) == ("pessimistic", 8)  # d_model: the checkpoint's
    changed = run_cli(["test", *args, "--model.ties=random"])
    assert (changed.model.ties, changed.model.hparams.d_model) == ("random", 8)
    spaced = run_cli(["test", *args, "--model.init_args.ties", "random"])
    assert spaced.model.ties == "random"
    whole = run_cli(["test", *args[1:], '--model={"class_path": "SASRec", "init_args": {"ties": "random"}}'])
    assert (whole.model.ties, whole.model.hparams.d_model) == ("random", 8)
    (tmp_path / "run.yaml").write_text("model:\n  class_path: SASRec\n  init_args: {ties: random, d_model: 64}\n")
    from_config = run_cli(["test", f"--config={tmp_path / 'run.yaml'}", *args[1:]])
    assert (from_config.model.ties, from_config.model.hparams.d_model) == ("pessimistic", 8)  # a config file: the checkpoint's


def test_explicit_model_keys():
    from recsys.lightning_cli import explicit_model_keys

    assert explicit_model_keys(["--model=SASRec", "--model.ties=random", "--model.init_args.lr", "0.1", "--data.x=1",
                                "--model.help", "--model.grounder.init_args.k=3", "--model.metrics+=ild@10"]) == [
        "init_args.ties", "init_args.lr", "init_args.grounder.init_args.k", "init_args.metrics"]
    assert explicit_model_keys(['--model={"class_path": "SASRec", "init_args": {"ties": "random", "lr": 0.1}}',
                                "--model.init_args", "{dropout: 0.2}"]) == [
        "init_args.ties", "init_args.lr", "init_args.dropout"]


def test_last_ckpt_is_the_newest_epoch_even_when_validation_stops_improving(tiny_path, tmp_path):
    """--ckpt_path last must go on from where a run stopped. With lr 0 validation never improves
    after epoch 0, so the best checkpoint stays epoch 0 while last.ckpt follows every epoch
    (Lightning >= 2.6's save_last alone would leave it at epoch 0 too)."""
    cli = run_cli(["fit", "--model=SASRec", "--model.max_len=5", "--model.d_model=8", "--model.ffn_dim=16",
                   "--model.lr=0", "--data=SeqDataModule", "--trainer.max_epochs=4", "--test_after_fit=false",
                   *common(tiny_path, tmp_path)])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.name == "best-0.ckpt"
    assert torch.load(best.parent / "last.ckpt", weights_only=True)["epoch"] == 3
