import lightning.pytorch as pl
import pytest
import torch

from recsys import RecModule, SeqDataModule
from recsys.data.batch import Batch
from recsys.models.pop import Pop
from recsys.models.sasrec import SASRec


def trainer(tmp_path, **kwargs):
    options = dict(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False)
    return pl.Trainer(**{**options, **kwargs})


def test_oracle_scores_one_and_a_constant_ranks_every_target_last(fake_plugin, tiny_path, tmp_path):
    from fake_models import ConstantRec, OracleRec

    data = SeqDataModule(str(tiny_path), max_len=5, mask_history=False)
    oracle = trainer(tmp_path).test(OracleRec(data.num_items), datamodule=data, verbose=False)[0]
    assert oracle["test/ndcg@10"] == 1.0 and oracle["test/mrr@5"] == 1.0
    constant = trainer(tmp_path).test(ConstantRec(data.num_items), datamodule=data, verbose=False)[0]
    # All 15 items tie and nothing is masked: pessimistic ties put every target at rank N = 15.
    assert constant["test/hit@10"] == 0.0 and constant["test/hit@20"] == 1.0
    assert constant["test/mrr@50"] == pytest.approx(1 / 15) and constant["test/ndcg@50"] == pytest.approx(0.25)


def test_generative_model_is_ranked_from_its_list(fake_plugin, tiny_path, tmp_path):
    from fake_models import EchoLast

    data = SeqDataModule(str(tiny_path), max_len=5, mask_history=False)
    result = trainer(tmp_path).test(EchoLast(data.num_items, metrics=["hit@1"]), datamodule=data, verbose=False)[0]
    batch = data.test_dataloader().dataset.__getitems__(range(len(data.data.split.evaluated)))
    expected = (batch.history[:, -1] == batch.target).float().mean().item()
    assert result["test/hit@1"] == pytest.approx(expected)


def test_sasrec_is_causal():
    torch.manual_seed(0)
    model = SASRec(num_items=20, max_len=6, dropout=0.0, attn_dropout=0.0).eval()
    history = torch.tensor([[0, 0, 3, 4, 5, 6]])
    changed = history.clone()
    changed[0, 4:] = torch.tensor([9, 10])
    out, out_changed = model.encode(history), model.encode(changed)
    assert torch.allclose(out[0, :4], out_changed[0, :4], atol=1e-6)  # positions <= 3 see nothing later
    assert not torch.allclose(out[0, 4:], out_changed[0, 4:])
    assert torch.isfinite(out).all()  # padding rows are never fully masked (no NaN)


def test_sasrec_padding_is_ignored():
    torch.manual_seed(0)
    model = SASRec(num_items=20, max_len=6, dropout=0.0, attn_dropout=0.0).eval()
    a = model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]]))
    b = model.item_embedding.weight.data[0].clone()
    model.item_embedding.weight.data[0] += 5.0  # a different PAD vector must not change real outputs
    c = model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]]))
    model.item_embedding.weight.data[0] = b
    assert torch.allclose(a[0, 2:], c[0, 2:], atol=1e-5)


@pytest.mark.parametrize("loss_type", ["ce", "bce"])
def test_sasrec_learns_on_tiny_data(tiny_path, tmp_path, loss_type):
    pl.seed_everything(0)
    data = SeqDataModule(str(tiny_path), max_len=5, batch_size=8, train_windows="tiled")
    model = SASRec(data.num_items, max_len=5, d_model=16, num_heads=2, ffn_dim=32, dropout=0.0,
                   attn_dropout=0.0, loss_type=loss_type, lr=0.01)
    batch = next(iter(data.train_dataloader()))
    before = model.loss(batch).item()
    trainer(tmp_path, max_epochs=30, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=data)
    assert model.loss(batch).item() < before * 0.7


def test_sasrec_scores_every_item():
    model = SASRec(num_items=12, max_len=4)
    batch = Batch(torch.tensor([[0, 1, 2, 3]]), torch.tensor([4]), torch.tensor([1]))
    assert model.score(batch).shape == (1, 13)
    with pytest.raises(ValueError, match="exceeds the model's max_len 4"):
        model.encode(torch.ones(1, 5, dtype=torch.long))


def test_pop_ranks_by_training_popularity_and_survives_a_checkpoint(tiny_path, tmp_path):
    data = SeqDataModule(str(tiny_path), max_len=5)
    model = Pop(data.num_items)
    t = trainer(tmp_path, enable_checkpointing=True)
    t.fit(model, datamodule=data)
    assert model.popularity.tolist() == data.catalog.popularity.astype(float).tolist()
    path = tmp_path / "pop.ckpt"
    t.save_checkpoint(path)
    restored = RecModule.load_from_checkpoint(path, weights_only=True)
    assert type(restored) is Pop and torch.equal(restored.popularity, model.popularity)


def test_sasrec_checkpoint_round_trip(tiny_path, tmp_path):
    data = SeqDataModule(str(tiny_path), max_len=5)
    model = SASRec(data.num_items, max_len=5, d_model=8, num_heads=2, ffn_dim=16)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(model, datamodule=data)
    t.save_checkpoint(tmp_path / "m.ckpt")
    restored = SASRec.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True).eval()
    batch = Batch(torch.tensor([[0, 1, 2, 3, 4]]), torch.tensor([5]), torch.tensor([1]))
    assert restored.hparams.d_model == 8 and restored.num_items == data.num_items
    assert torch.allclose(restored.score(batch), model.eval().score(batch))


def test_sasrec_last_only_matches_the_full_encoding():
    torch.manual_seed(0)
    model = SASRec(num_items=20, max_len=6).eval()
    history = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    assert torch.allclose(model.encode(history, last_only=True)[:, -1], model.encode(history)[:, -1], atol=1e-6)


@pytest.mark.parametrize("alignment", ["left", "right"])
def test_sasrec_position_alignments_are_causal_and_ignore_padding(alignment):
    torch.manual_seed(0)
    model = SASRec(num_items=20, max_len=6, dropout=0.0, attn_dropout=0.0, position_alignment=alignment).eval()
    short = model.encode(torch.tensor([[0, 0, 3, 4, 5, 6]]))
    assert torch.isfinite(short).all()
    if alignment == "left":  # the same items with less padding sit at the same positions
        assert torch.allclose(model.encode(torch.tensor([[0, 3, 4, 5, 6]]))[0, 1:], short[0, 2:], atol=1e-5)
    else:  # the most recent item keeps the last position
        assert torch.allclose(model.encode(torch.tensor([[3, 4, 5, 6]]))[0, -1], short[0, -1], atol=1e-5)


def test_load_from_checkpoint_accepts_file_objects(tiny_path, tmp_path):
    import io

    data = SeqDataModule(str(tiny_path), max_len=5)
    model = Pop(data.num_items)
    t = trainer(tmp_path, enable_checkpointing=True)
    t.fit(model, datamodule=data)
    t.save_checkpoint(tmp_path / "pop.ckpt")
    buffer = io.BytesIO((tmp_path / "pop.ckpt").read_bytes())
    assert type(RecModule.load_from_checkpoint(buffer)) is Pop


def test_pop_needs_no_fit_and_ranks_by_training_counts(tiny_path, tmp_path):
    import math

    import pandas as pd

    data = SeqDataModule(str(tiny_path), max_len=5)
    result = trainer(tmp_path).test(Pop(data.num_items), datamodule=data, verbose=False)[0]
    # By hand from the raw file: per user in time order (ties in file order), the last item is
    # the test target, the one before it validation, the rest training (users with fewer than
    # three items train on all of them). Items seen before the target are masked, the target
    # keeps its count, ties count against it.
    inter = pd.read_csv(tiny_path / "tiny.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    users = {u: rows["item_id"].tolist() for u, rows in inter.sort_values("timestamp", kind="stable").groupby("user_id")}
    counts = {}
    for items in users.values():
        for item in items[:-2] if len(items) >= 3 else items:
            counts[item] = counts.get(item, 0) + 1
    catalog = set(inter["item_id"])
    ranks = []
    for items in users.values():
        if len(items) < 3:
            continue
        target, seen = items[-1], set(items[:-1]) - {items[-1]}
        candidates = catalog - seen
        ranks.append(sum(counts.get(i, 0) >= counts.get(target, 0) for i in candidates))
    assert result["test/windows"] == len(ranks)
    assert result["test/hit@5"] == pytest.approx(sum(r <= 5 for r in ranks) / len(ranks))
    assert result["test/ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in ranks if r <= 10) / len(ranks))


def test_a_model_can_load_another_checkpoint_inside_its_init_under_the_cli(fake_plugin, tiny_path, tmp_path):
    from recsys.lightning_cli import run_cli

    common = ["--data=SeqDataModule", f"--data.path={tiny_path}", "--data.max_len=5", "--trainer.max_epochs=1",
              "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--test_after_fit=false"]
    run_cli(["fit", "--model=SASRec", "--model.d_model=8", "--model.num_heads=1", "--model.max_len=5", *common,
             f"--trainer.default_root_dir={tmp_path / 'inner'}"])
    inner = next((tmp_path / "inner").rglob("last.ckpt"))
    cli = run_cli(["fit", "--model=WrapsCheckpoint", f"--model.inner_checkpoint={inner}", *common,
                   f"--trainer.default_root_dir={tmp_path / 'outer'}"])
    # Each model keeps its own hyper-parameters (LightningCLI's record of the outer class must not
    # leak into the inner model's save_hyperparameters).
    assert cli.model.hparams["inner_checkpoint"] == str(inner)
    assert "inner_checkpoint" not in cli.model.inner.hparams and cli.model.inner.hparams["d_model"] == 8
    assert type(cli.model.inner).__name__ == "SASRec"


@pytest.mark.parametrize("model", ["Pop", "SKNN", "EASE"])
def test_models_without_gradients_offer_no_lr_and_fit_without_optimizer_warnings(model, tiny_path, tmp_path, capsys):
    import warnings

    from recsys.cli import main
    from recsys.testing import run_cli

    with pytest.raises(SystemExit) as exit_:
        main(["fit", f"--model={model}", "--data=SeqDataModule", "--model.lr=0.01", f"--data.path={tiny_path}"])
    assert exit_.value.code == 2 and "'lr' is not accepted" in capsys.readouterr().err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli(["fit", f"--model={model}", "--data=SeqDataModule", f"--data.path={tiny_path}", "--data.max_len=5",
                 "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
