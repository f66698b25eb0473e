"""The item tokenizer: Sinkhorn balance, collision resolution, determinism, the codes file."""

import json
from pathlib import Path

import pytest
import torch

from recsys_semantic_ids.codes import (CodeTable, add_disambiguation_level, collision_rate, colliding_groups,
                                       random_codes, resolve_collisions)
from recsys_semantic_ids.quantize import ResidualQuantizer, sinkhorn


def test_sinkhorn_spreads_a_skewed_batch_evenly_over_the_codes():
    torch.manual_seed(0)
    b, k = 64, 8
    # Every point is nearest to code 0: argmin puts all 64 there.
    distances = torch.rand(b, k) + 1.0
    distances[:, 0] = 0.1 + 0.01 * torch.rand(b)
    assert torch.bincount(distances.argmin(1), minlength=k).max() == b
    q = sinkhorn(distances.float(), epsilon=0.003, iters=50)
    assert q.dtype == torch.float64 and torch.isfinite(q).all()
    counts = torch.bincount(q.argmax(1), minlength=k)
    assert counts.max() <= 2 * b // k and (counts > 0).all(), counts
    assert torch.allclose(q.sum(1), torch.full((b,), 1 / b, dtype=torch.float64), rtol=1e-6)


def test_sinkhorn_does_not_overflow_where_float32_would():
    # exp(1 / 0.003) = e^333 overflows float32 (max ~e^88): the result must stay finite.
    q = sinkhorn(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), epsilon=0.003)
    assert torch.isfinite(q).all()


def test_resolution_spreads_groups_and_a_disambiguation_level_makes_every_tuple_unique():
    codes = torch.tensor([[0, 1], [0, 1], [0, 1], [2, 2], [1, 0]])
    assert collision_rate(codes) == pytest.approx(1 - 3 / 5)
    assert [g.tolist() for g in colliding_groups(codes)] == [[0, 1, 2]]

    def requantise(rows):  # a quantiser that can split the group into two of its three rows
        return torch.tensor([[0, 1], [0, 0], [0, 1]])[: len(rows)]

    def spread(rows):  # a quantiser with room: three distinct last codes for the group, none taken
        return torch.tensor([[0, 1], [0, 2], [0, 3]])[: len(rows)]

    assert torch.equal(resolve_collisions(codes, spread, rounds=5),
                       torch.tensor([[0, 1], [0, 2], [0, 3], [2, 2], [1, 0]]))  # no tuple shared any more

    resolved = resolve_collisions(codes, requantise, rounds=5)
    assert collision_rate(resolved) > 0  # this quantiser can never give three rows distinct tuples
    unique, extra = add_disambiguation_level(resolved)
    assert collision_rate(unique) == 0 and extra == 2
    assert torch.equal(unique[:, :2], resolved)  # the first levels are kept
    assert sorted(unique[[0, 1, 2], 2].tolist()) == [0, 0, 1] and unique[[3, 4], 2].tolist() == [0, 0]


def test_rq_quantizer_with_sinkhorn_resolves_collisions_down_to_what_the_first_level_allows():
    torch.manual_seed(0)
    rq = ResidualQuantizer(levels=2, codebook_size=4, dim=3)
    z = torch.randn(12, 3)
    rq.init_kmeans(z, seed=0, iters=20)
    codes = rq(z)[1]

    def requantise(rows):
        return rq(z[rows], sinkhorn_epsilon=0.003)[1]

    resolved = resolve_collisions(codes, requantise, rounds=20)
    # Sinkhorn re-quantises the last level only: the first level is kept, so items sharing a
    # first code can at best take all K = 4 last codes: at most sum over first codes of
    # min(count, K) distinct tuples (first codes 0, 1, 2, 3 hold 5, 5, 1, 1 items: 4 + 4 + 1 + 1
    # = 10 of 12, up from 7 before resolution).
    assert torch.equal(resolved[:, 0], codes[:, 0])
    best_distinct = sum(min(count, 4) for count in torch.bincount(codes[:, 0]).tolist())
    distinct_before = len({tuple(row) for row in codes.tolist()})
    assert (distinct_before, best_distinct) == (7, 10)
    assert collision_rate(codes) == pytest.approx(1 - distinct_before / 12)
    assert collision_rate(resolved) == pytest.approx(1 - best_distinct / 12)  # the rounds reach that optimum
    assert len({tuple(row) for row in resolved.tolist()}) == best_distinct


def test_random_codes_are_distinct_and_in_range():
    codes = random_codes(100, [5, 5, 5], seed=1)
    assert codes.shape == (100, 3) and collision_rate(codes) == 0
    assert (codes >= 0).all() and (codes < 5).all()
    assert torch.equal(codes, random_codes(100, [5, 5, 5], seed=1))
    with pytest.raises(ValueError, match="fewer than"):
        random_codes(30, [2, 2, 2], seed=0)


def test_codes_file_round_trip_and_clear_errors(tmp_path):
    table = CodeTable(["a", "b"], torch.tensor([[0, 1], [1, 0]]), [2, 2], {"collision_rate_after": 0.0})
    path = table.write(tmp_path / "codes.json")
    assert [p.name for p in tmp_path.iterdir()] == ["codes.json"]  # no temporary file left behind
    again = CodeTable.read(path)
    assert again.item_ids == ["a", "b"] and torch.equal(again.codes, table.codes) and again.levels == [2, 2]
    with pytest.raises(FileNotFoundError, match="recsys predict"):
        CodeTable.read(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="not a codes file"):
        CodeTable.read(tmp_path / "other.json")
    with pytest.raises(ValueError, match="outside"):
        CodeTable(["a"], torch.tensor([[0, 2]]), [2, 2])


def _fit_and_predict(tiny_data, root, method="rqvae", epochs=3):
    from recsys.testing import run_cli

    model = ["--model=RQVAE", "--model.encoder=tiny-bert", "--model.templates=[title, default]", f"--model.method={method}",
             "--model.levels=2", "--model.codebook_size=4", "--model.hidden=[32]", "--model.e_dim=8",
             "--model.kmeans_iters=10", "--model.max_length=16"]
    data = ["--data=recsys_semantic_ids.ItemDataModule", f"--data.path={tiny_data}", "--data.item_batch_size=8"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]
    callbacks = ('--trainer.callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                 f'"init_args": {{"monitor": "val/loss", "mode": "min", "save_last": true, "dirpath": "{root}/ckpt"}}}}]')
    run_cli(["fit", *model, *data, *quiet, callbacks, "--seed_everything=3", f"--trainer.max_epochs={epochs}",
             f"--trainer.default_root_dir={root}", "--test_after_fit=false"])
    codes = root / "codes.json"
    run_cli(["predict", *model, f"--model.codes_path={codes}", *data, *quiet, f"--ckpt_path={root}/ckpt/last.ckpt",
             f"--trainer.default_root_dir={root}/predict"])
    return CodeTable.read(codes)


def test_rqvae_fit_then_predict_is_deterministic_and_collision_free(semantic_ids_plugin, tiny_data, tmp_path,
                                                                     monkeypatch):
    import recsys_semantic_ids.tokenizer as tokenizer

    raw = []

    def spy(codes, requantise, rounds):
        raw.append(codes.clone())
        return resolve_collisions(codes, requantise, rounds)

    monkeypatch.setattr(tokenizer, "resolve_collisions", spy)  # records the codes before resolution
    first = _fit_and_predict(tiny_data, tmp_path / "a")
    second = _fit_and_predict(tiny_data, tmp_path / "b")
    assert torch.equal(first.codes, second.codes), "same seed, different codes"
    assert first.stats["collision_rate_after"] == 0 and collision_rate(first.codes) == 0
    assert len(first.item_ids) == 15 and first.levels[:2] == [4, 4]
    # The rate before resolution, counted from the raw codes the model handed to resolution:
    # 1 - distinct tuples / 15 (4 distinct here: 11/15), and the Sinkhorn rounds lowered it.
    assert len(raw) == 2 and raw[0].shape == (15, 2)
    distinct_raw = len({tuple(row) for row in raw[0].tolist()})
    assert first.stats["collision_rate_before"] == pytest.approx(1 - distinct_raw / 15)
    assert first.stats["collision_rate_after_sinkhorn_rounds"] < first.stats["collision_rate_before"]


def test_rqkmeans_needs_no_training(semantic_ids_plugin, tiny_data, tmp_path):
    table = _fit_and_predict(tiny_data, tmp_path, method="rqkmeans", epochs=1)
    assert collision_rate(table.codes) == 0 and table.stats["method"] == "rqkmeans"


def _rqvae_args(tiny_data, tmp_path) -> list[str]:
    return ["--model=RQVAE", "--model.encoder=tiny-bert", "--model.hidden=[16]", "--model.e_dim=4",
            "--model.levels=1", "--model.codebook_size=2", "--data=recsys_semantic_ids.ItemDataModule",
            f"--data.path={tiny_data}", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def test_rqvae_checkpoints_on_its_loss_by_default(semantic_ids_plugin, tiny_data, tmp_path, capsys):
    """RQVAE.monitor: the CLI's default checkpoint and early stopping follow val/loss (min), so a
    config needs no callbacks block."""
    import yaml

    from recsys.testing import run_cli

    with pytest.raises(SystemExit):
        run_cli(["fit", *_rqvae_args(tiny_data, tmp_path), "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    watched = {c["class_path"].rsplit(".", 1)[-1]: (c["init_args"]["monitor"], c["init_args"]["mode"])
               for c in callbacks if c.get("init_args", {}).get("monitor")}  # not the last.ckpt writer (monitor None)
    assert watched == {"ModelCheckpoint": ("val/loss", "min"), "EarlyStopping": ("val/loss", "min")}
    cli = run_cli(["fit", *_rqvae_args(tiny_data, tmp_path)])
    assert cli.trainer.checkpoint_callback.monitor == "val/loss"
    assert cli.trainer.checkpoint_callback.best_model_path


def test_rqvae_refuses_a_ranking_monitor(semantic_ids_plugin, tiny_data, tmp_path):
    from recsys.testing import run_cli

    with pytest.raises(ValueError, match="val/hit@10.*which the model does not log"):
        run_cli(["fit", *_rqvae_args(tiny_data, tmp_path), "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
                 "--trainer.callbacks.monitor=val/hit@10"])


CONFIGS = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "/".join(c.split("/")[-2:]))
def test_configs_parse(semantic_ids_plugin, config, capsys):
    from recsys.testing import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", f"--config={config}", "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def test_config_list_is_not_empty():
    assert len(CONFIGS) >= 10
