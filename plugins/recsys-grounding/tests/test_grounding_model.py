"""BIGRec: generation, grounding inside the model, configs (the model contract: test_grounding_contract.py)."""

from pathlib import Path

import pytest
import torch

import lightning.pytorch as pl
import recsys
import recsys.testing
import recsys_grounding.plugin
from recsys_grounding import BIGRec, FewShotSeqDataModule
from recsys_grounding.generation import generate_titles
from recsys_grounding.prompts import collate_examples, encode_example

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))  # the plugin's own
TINY = {"backbone": "tiny-llama", "max_new_tokens": 4, "num_beams": 3, "num_return_sequences": 3, "lr": 0.003,
        "warmup_steps": 0, "history_items": 3}


@pytest.fixture(scope="module")
def model(tiny_data):
    torch.manual_seed(0)
    m = BIGRec(tiny_data.num_items, **TINY)
    m.set_catalog(tiny_data.catalog)
    return m.eval()


def test_left_padded_generation_equals_unpadded(model):
    short = model.prompts(torch.tensor([[0, 0, 0, 1, 2]]))[0]
    long = model.prompts(torch.tensor([[3, 4, 5, 6, 7]]))[0]
    together = generate_titles(model.lm, model.tokenizer, [short, long], 3, 3, 4)
    alone = [generate_titles(model.lm, model.tokenizer, [p], 3, 3, 4)[0] for p in (short, long)]
    assert together == alone


def test_beams_are_deterministic_and_deduplicated(model, monkeypatch):
    history = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    first = model.generate(history)
    assert first == model.generate(history)
    for titles in first:
        keys = [recsys_grounding.titles.title_key(t) for t in titles]
        assert len(keys) == len(set(keys)) and 1 <= len(titles) <= 3

    # beams that normalise to one title are kept once, at the best position
    class Fake:
        def generate(self, input_ids, attention_mask, generation_config):
            assert generation_config.do_sample is False and generation_config.num_beams == 3
            n = len(input_ids) * 3
            return torch.cat([input_ids.repeat_interleave(3, 0), torch.zeros(n, 1, dtype=torch.long)], 1)

        def parameters(self):
            yield torch.zeros(1)

    texts = iter(['"Heat (1995)"', "heat (1995)", "Casino (1995)"])
    monkeypatch.setattr(model.tokenizer, "batch_decode", lambda ids, skip_special_tokens: [next(texts) for _ in ids])
    assert generate_titles(Fake(), model.tokenizer, ["p"], 3, 3, 4) == [["Heat (1995)", "Casino (1995)"]]


def test_recommend_grounds_the_top_beam_and_excludes_history(model, tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    ids, scores = model.recommend(batch, 5)
    top = [t[0] for t in model.generate(batch.history)]
    expected, _ = model.grounder.rank(model.grounder.distances(top), 5, exclude=batch.seen,
                                      first=model.grounder.exact_hits(top))
    assert torch.equal(ids, expected)
    for row in range(len(ids)):
        assert not set(ids[row].tolist()) & (set(batch.seen[row].tolist()) - {0})


def test_popularity_reweighting_keeps_rank_one(model, tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    a, _ = model.recommend(batch, 5)
    try:
        model.reweight, model.gamma = "popularity", 30.0
        b, _ = model.recommend(batch, 5)
    finally:
        model.reweight, model.gamma = "none", 0.0
    assert torch.equal(a[:, 0], b[:, 0])


def test_loss_is_the_causal_lm_loss_on_the_response(model, tiny_data):
    batch = next(iter(tiny_data.train_dataloader()))
    with torch.no_grad():
        ours = model.loss(batch)
        prompts = model.prompts(batch.history)
        examples = [encode_example(model.tokenizer, p, model.item_texts[int(t)]) for p, t in
                    zip(prompts, batch.target.tolist())]
        reference = model.lm(**collate_examples(examples, model.tokenizer.pad_token_id)).loss  # transformers' own
    assert torch.allclose(ours, reference, atol=1e-5)


def test_runs_under_bigrecs_global_time_protocol(model):
    """BIGRec's own protocol (the core's ``global_time``): sampled windows, nothing masked."""
    data = FewShotSeqDataModule(path=str(recsys.testing.tiny_dataset()), protocol="global_time", max_len=5,
                                eval_sample=4, train_samples=3)
    data.setup("fit")
    batches = list(data.test_dataloader())
    assert len(batches) == 1
    batch = batches[0]
    # Counted by hand from tiny.inter: 53 interactions in time order (ties in file order) are cut
    # at round(0.8 * 53) = 42 and round(0.9 * 53) = 48, so the test period is the last 5, all of
    # user 8, whose sequence is 12 7 6 11 14 4 3: the test windows are its items 6, 11, 14, 4, 3,
    # each with every earlier item as history (the last max_len = 5); 4 of the 5 are sampled.
    sequence = ["12", "7", "6", "11", "14", "4", "3"]
    windows = {sequence[t]: sequence[max(0, t - 5):t] for t in range(2, 7)}
    tokens = data.catalog.vocab.tokens

    def read(batch):  # target -> history, as raw item tokens
        return {tokens[int(t)]: [tokens[int(i)] for i in row if i] for t, row in zip(batch.target, batch.history)}

    unsampled = FewShotSeqDataModule(path=str(recsys.testing.tiny_dataset()), protocol="global_time", max_len=5)
    unsampled.setup("fit")
    everything = [read(b) for b in unsampled.test_dataloader()]
    assert len(everything) == 1 and everything[0] == windows
    got = read(batch)
    assert len(got) == len(batch.target) == 4 and batch.seen is None and len(set(batch.user.tolist())) == 1
    assert all(windows[target] == history for target, history in got.items()), got
    # Nothing masked: the list is the top beam grounded over every item, the history included.
    ids, scores = model.recommend(batch, 5)
    top = [t[0] for t in model.generate(batch.history)]
    expected, _ = model.grounder.rank(model.grounder.distances(top), 5, exclude=None,
                                      first=model.grounder.exact_hits(top))
    assert torch.equal(ids, expected)
    assert any(set(ids[b].tolist()) & set(batch.history[b].tolist()) for b in range(len(ids)))  # the case occurs
    assert sum(len(b.target) for b in data.train_dataloader()) == 3


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="cf_checkpoint"):
        BIGRec(15, backbone="tiny-llama", reweight="cf")
    with pytest.raises(ValueError, match="history_items"):
        BIGRec(15, backbone="tiny-llama", history_items=0)


def test_few_shot_data_module_trains_on_n_seeded_windows():
    path = str(recsys.testing.tiny_dataset())
    data = FewShotSeqDataModule(path=path, max_len=5, train_samples=6, sample_seed=3, min_history=2, batch_size=4)
    data.setup("fit")
    loader = data.train_dataloader()
    batches = list(loader)
    assert sum(len(b.target) for b in batches) == 6
    assert all(((b.history != 0).sum(1) >= 2).all() for b in batches)
    again = FewShotSeqDataModule(path=path, max_len=5, train_samples=6, sample_seed=3, min_history=2)
    again.setup("fit")
    again.train_dataloader()
    assert again.train_indices.tolist() == data.train_indices.tolist()


def test_every_bigrec_config_is_found():
    assert {f"{p.parent.name}/{p.name}" for p in CONFIGS} >= {
        "gpu/bigrec-7b.yaml", "ml-100k/bigrec.yaml", "ml-100k/bigrec-pop.yaml", "ml-100k/bigrec-cf.yaml",
        "ml-100k/bigrec-random.yaml", "ml-100k/bigrec-global-time.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_parse(grounding_plugin, capsys, config):
    with pytest.raises(SystemExit) as exit_:
        recsys.testing.run_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: recsys_grounding.model.BIGRec" in printed
    assert "class_path: recsys_grounding.data.FewShotSeqDataModule" in printed
    if config.parent.name == "gpu":
        assert "bf16-mixed" in printed and "lora_r: 8" in printed



def _tied_distances(model, monkeypatch, tied):
    """Every row's top beam grounds to the same distances: items ``tied`` at the minimum, the others
    further, each at its own distance; no exact title match."""
    n = model.num_items
    dist = torch.linspace(1.0, 2.0, n + 1)
    dist[0] = float("inf")
    dist[tied] = 0.5
    monkeypatch.setattr(model, "generate", lambda history: [["Some Title (1999)"]] * len(history))
    monkeypatch.setattr(model.grounder, "distances", lambda outputs: dist.repeat(len(outputs), 1))
    monkeypatch.setattr(model.grounder, "exact_hits",
                        lambda outputs: torch.zeros(len(outputs), n + 1, dtype=torch.bool))
    return dist


@pytest.mark.parametrize("ties", ["pessimistic", "random"])
def test_equal_distances_do_not_favour_the_lower_id(model, monkeypatch, ties):
    tied = [4, 11]
    _tied_distances(model, monkeypatch, tied)
    history = torch.tensor([[0, 0, 0, 1, 2]] * 2)
    monkeypatch.setattr(model, "ties", ties)
    ranks = {}
    for item in tied:
        batch = recsys.Batch(history=history, target=torch.tensor([item, item]), user=torch.tensor([1, 2]),
                             seen=torch.tensor([[0, 0, 0, 1, 2]] * 2))
        ids, scores = model.recommend(batch, 5)
        assert ids[0, :2].tolist() == tied and scores[0, 0] == scores[0, 1]  # one score for one distance
        ranks[item] = model.rank(batch)
    if ties == "pessimistic":
        assert ranks[4].tolist() == ranks[11].tolist() == [2, 2]  # both behind the item tied with them
    else:
        draws = torch.cat(list(ranks.values()))
        assert set(draws.tolist()) <= {1, 2}
        # the draw of dense_ranks (a hash of user and item), whichever id is lower
        for item, got in ranks.items():
            scores = torch.full((2, model.num_items + 1), -3.0)
            scores[:, 0] = float("-inf")
            scores[:, tied] = 0.0
            scores[:, [1, 2]] = float("-inf")
            assert torch.equal(got, recsys.dense_ranks(scores, torch.tensor([item, item]), "random",
                                                            torch.tensor([1, 2])))


def test_stats_come_from_the_batchs_own_list(model, tiny_data, monkeypatch):
    # a repeated target makes the engine ask again for that window: the logged grounding rate
    # still counts each window once, from the batch's own list
    batch = next(iter(tiny_data.test_dataloader()))
    batch = batch._replace(target=torch.where(torch.arange(len(batch.target)) == 0, batch.seen[:, -1], batch.target))
    top = [t[0] for t in model.generate(batch.history)]
    distances = model.grounder.distances(top)
    expected = {"test/grounding_rate": model.grounder.grounded(distances).float().mean(),
                "test/exact_match": model.grounder.exact_match(top).float().mean()}
    calls = []
    recommend = model.recommend
    monkeypatch.setattr(model, "recommend", lambda b, k: calls.append(len(b.target)) or recommend(b, k))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(model, dataloaders=torch.utils.data.DataLoader([batch], batch_size=None, collate_fn=lambda b: b))
    assert calls == [len(batch.target), 1]
    for name, value in expected.items():
        assert torch.allclose(trainer.callback_metrics[name], value)
    assert {"val/grounding_rate", "val/exact_match"} <= model.logged_metrics("val")
    assert not {"train/grounding_rate", "train/exact_match"} & model.logged_metrics("train")
