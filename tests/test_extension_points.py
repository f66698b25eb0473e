"""The public extension points plugins build on (API 1.5-1.6): the catalog hook, declared metrics,
the dense/generative flag, model-reported evaluation metrics, the causal-LM loss and the
per-window ranks of the last evaluation (1.6)."""

from __future__ import annotations

import warnings

import pytest
import torch

import recsys
import recsys.llm
import recsys.testing
from recsys.lightning_cli import ConfigError


class Counting(recsys.SeqRecModule):
    """Scores items by id; records every catalog it is given."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.catalogs: list = []

    def on_catalog(self, catalog) -> None:
        self.catalogs.append(catalog)

    def loss(self, batch):
        return self.weight.sum() * 0 + 1.0

    def score(self, batch):
        return torch.arange(self.num_items + 1, dtype=torch.float).expand(len(batch.target), -1) + self.weight


@pytest.fixture
def tiny():
    data = recsys.SeqDataModule(path=str(recsys.testing.tiny_dataset()), max_len=5, eval_batch_size=8)
    data.setup("fit")
    return data


def test_set_catalog_checks_the_length_and_calls_on_catalog_once_per_catalog(tiny):
    model = Counting(tiny.num_items)
    assert model.catalog is None
    model.set_catalog(tiny.catalog)
    model.set_catalog(tiny.catalog)  # the same object again: nothing to do
    assert model.catalog is tiny.catalog and model.catalogs == [tiny.catalog]
    wrong = Counting(tiny.num_items + 1)
    with pytest.raises(ValueError, match=rf"num_items={tiny.num_items + 1}.*catalog has {tiny.num_items} items"):
        wrong.set_catalog(tiny.catalog)
    assert wrong.catalogs == [] and wrong.catalog is None

    class Failing(Counting):
        def on_catalog(self, catalog):
            super().on_catalog(catalog)
            if len(self.catalogs) == 1:
                raise RuntimeError("a CF checkpoint of another size")

    failing = Failing(tiny.num_items)
    with pytest.raises(RuntimeError):
        failing.set_catalog(tiny.catalog)
    assert failing.catalog is None
    failing.set_catalog(tiny.catalog)  # a failed hook is retried, not skipped
    assert failing.catalog is tiny.catalog and len(failing.catalogs) == 2


def test_setup_hands_the_data_modules_catalog_to_on_catalog(tiny, tmp_path):
    import lightning.pytorch as pl

    model = Counting(tiny.num_items)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.validate(model, datamodule=tiny, verbose=False)
    trainer.test(model, datamodule=tiny, verbose=False)
    assert model.catalogs == [tiny.catalog]  # two stages, one catalog: one call


def test_pop_reads_its_counts_through_on_catalog(tiny):
    pop = recsys.get_models()["Pop"].obj(tiny.num_items)
    pop.set_catalog(tiny.catalog)
    assert torch.equal(pop.popularity, torch.as_tensor(tiny.catalog.popularity, dtype=torch.float))


class Reporting(recsys.SeqRecModule):
    """A generative model: lists items by id, best = highest id, and reports per window whether
    it was asked with a real target (the engine's repeat re-query blanks targets to 0)."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.save_hyperparameters()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def logged_metrics(self, stage):
        return super().logged_metrics(stage) | ({f"{stage}/asked"} if stage != "train" else set())

    def loss(self, batch):
        return self.weight.sum() * 0 + 1.0

    def recommend(self, batch, k):
        self.report_metric("asked", (batch.target > 0).float())
        scores = torch.arange(self.num_items + 1, dtype=torch.float).expand(len(batch.target), -1).clone()
        scores = recsys.mask_seen(scores, batch.seen)
        top = scores.topk(k, dim=1)
        return top.indices, top.values


def _repeat_batch():
    # user 0's target (3) is in its history: the engine re-asks that window with targets blanked
    history = torch.tensor([[1, 2, 3], [0, 1, 2]])
    return recsys.Batch(user=torch.tensor([0, 1]), history=history, target=torch.tensor([3, 5]),
                        seen=history.clone(), index=torch.tensor([0, 1]))


def test_report_metric_logs_the_evaluation_steps_own_call_only():
    model = Reporting(8)
    logged = []
    model.log = lambda name, value, **kwargs: logged.append((name, float(value), kwargs.get("batch_size")))
    model.validation_step(_repeat_batch(), 0)
    assert ("val/asked", 1.0, 2) in logged  # the re-query (targets 0) did not report
    assert [name for name, _, _ in logged] == ["val/asked"]
    logged.clear()
    model.recommend(_repeat_batch(), 3)  # outside an evaluation step: nothing
    assert logged == []


def test_is_dense_tells_scoring_models_from_listing_ones():
    assert Counting(5).is_dense and not Reporting(5).is_dense

    class Legacy(Counting):  # written against API 1.4
        def _is_dense(self):
            return False

    with pytest.warns(DeprecationWarning, match="is_dense"):
        assert Legacy(5).is_dense is False


def _fit_args(tiny_path, tmp_path, monitor):
    return ["fit", "--model=Reporting", "--data=SeqDataModule", f"--data.path={tiny_path}", "--data.max_len=5",
            "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", "--test_after_fit=false",
            "--trainer.callbacks+=EarlyStopping", f"--trainer.callbacks.monitor={monitor}"]


def test_the_cli_accepts_a_monitor_the_model_declares_and_rejects_one_nobody_logs(tmp_path):
    class Plugin:
        @recsys.hookimpl
        def register_models(self, register):
            register(Reporting)

    tiny_path = recsys.testing.tiny_dataset()
    with recsys.testing.registered(Plugin(), "reporting"):
        cli = recsys.testing.run_cli(_fit_args(tiny_path, tmp_path / "ok", "val/asked"))
        assert float(cli.trainer.callback_metrics["val/asked"]) == 1.0
        with pytest.raises(ConfigError, match="val/nothing.*does not log"):
            recsys.testing.run_cli(_fit_args(tiny_path, tmp_path / "bad", "val/nothing"))


def test_response_loss_is_the_causal_lm_loss_over_labelled_tokens():
    backbone = recsys.load_backbone("tiny-llama", head="causal-lm", pretrained=False)
    torch.manual_seed(0)
    lm = backbone.model.eval()
    ids = torch.randint(3, 50, (2, 7))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :4] = recsys.llm.IGNORE_INDEX  # the prompt is not learned
    labels[1, 6] = recsys.llm.IGNORE_INDEX
    expected = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
    # by hand: position t's logits predict token t + 1, mean over the labelled targets
    logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    by_hand = torch.nn.functional.cross_entropy(logits[keep].float(), target[keep])
    got = recsys.llm.response_loss(lm, ids, mask, labels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=1e-5)
    wrapped = recsys.llm.add_lora(lm, r=2, modules_to_save=["lm_head"])
    assert recsys.llm.unwrap_peft(wrapped) is lm
    assert "lm_head" in wrapped.peft_config["default"].modules_to_save  # peft_kwargs reach LoraConfig
    torch.testing.assert_close(recsys.llm.response_loss(wrapped, ids, mask, labels), expected, atol=1e-5, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert recsys.llm.unwrap_peft(torch.nn.Linear(2, 2)).in_features == 2


def test_evaluated_ranks_are_the_test_epochs_windows_and_give_the_logged_metrics(tiny, tmp_path):
    import lightning.pytorch as pl

    model = Counting(tiny.num_items)
    assert model.evaluated_ranks("test") is None
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    logged = trainer.test(model, datamodule=tiny, verbose=False)[0]
    rows = model.evaluated_ranks("test")
    # computed here, window by window, from the public rank(): the same (index, rank, user) rows
    expected = []
    for batch in tiny.test_dataloader():
        for index, rank, user in zip(batch.index.tolist(), model.rank(batch).tolist(), batch.user.tolist()):
            expected.append((index, rank, user))
    assert sorted(map(tuple, rows[:, [0, 1, 3]].tolist())) == sorted(expected)
    assert len({user for _, _, user in expected}) == len(expected)  # loo: one test window per user
    ranks = rows[:, 1].float()
    ndcg10 = torch.where(ranks <= 10, 1 / torch.log2(ranks + 1), torch.zeros_like(ranks)).mean()
    assert float(ndcg10) == pytest.approx(logged["test/ndcg@10"], abs=1e-6)
    assert float((ranks <= 5).float().mean()) == pytest.approx(logged["test/hit@5"], abs=1e-6)
    assert model.evaluated_ranks("val") is None  # only test ran
