"""Retrieve then rerank, and the baseline rerankers, on the packaged tiny dataset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import recsys
import recsys.testing
from recsys_rerank import plugin
from recsys_rerank.model import Rerank
from recsys_rerank.rerankers import PopularityReranker, RandomReranker

CANDIDATES = '--data.candidates={"class_path": "recsys.CandidateLists", "init_args": {"num": 5}}'


class Reverse(recsys.Reranker):
    """Reverses the order the candidates come in (the retriever's, best first)."""

    def score(self, batch, candidates):
        return torch.arange(candidates.shape[1], dtype=torch.float).expand(candidates.shape)


def test_the_plugin_registers_its_model_and_rerankers():
    with recsys.testing.registered(plugin, "recsys-rerank"):
        assert recsys.get_models()["Rerank"].obj is Rerank
        assert {"RandomReranker", "PopularityReranker"} <= set(recsys.get_rerankers())


def test_rerank_on_candidate_lists_needs_no_retriever(tiny_path, tmp_path):
    """Five candidates: every target is within the top 5 whatever the order; a random order is
    the same in two runs and differs from the popularity order."""
    runs = {}
    with recsys.testing.registered(plugin, "recsys-rerank"):
        for run, name in enumerate(("RandomReranker", "RandomReranker", "PopularityReranker")):
            cli = recsys.testing.run_cli(["test", "--model=Rerank", f"--model.reranker={name}", "--data=SeqDataModule",
                                          f"--data.path={tiny_path}", CANDIDATES, "--trainer.logger=false",
                                          f"--trainer.default_root_dir={tmp_path / str(run)}"])
            metrics = cli.trainer.callback_metrics
            assert metrics["test/hit@5"] == 1.0
            runs.setdefault(name, []).append(float(metrics["test/ndcg@5"]))
    assert runs["RandomReranker"][0] == runs["RandomReranker"][1]
    assert runs["RandomReranker"][0] != runs["PopularityReranker"][0]


def test_without_candidates_or_retriever_it_says_what_is_missing(tiny_data):
    model = Rerank(num_items=tiny_data.num_items, reranker=RandomReranker())
    batch = next(iter(tiny_data.test_dataloader()))
    with pytest.raises(ValueError, match="needs model.retriever"):
        model.score(batch)


def test_the_reranked_top_n_comes_first_and_the_rest_keeps_the_retrievers_order(retriever, tiny_data):
    model = Rerank(num_items=tiny_data.num_items, reranker=Reverse(), retriever=retriever, top_n=3)
    model.set_catalog(tiny_data.catalog)
    batch = next(iter(tiny_data.test_dataloader()))
    base = recsys.mask_seen(model.retriever.score(batch).float(), batch.seen)
    shown = recsys.mask_seen(model.score(batch), batch.seen)
    for row in range(len(batch.target)):
        unseen = int(base[row].isfinite().sum())
        by_retriever = base[row].argsort(descending=True, stable=True)[:unseen].tolist()
        expected = by_retriever[:3][::-1] + by_retriever[3:]
        assert shown[row].argsort(descending=True, stable=True)[:unseen].tolist() == expected


class ByItem(nn.Module):
    """A stand-in retriever: item i scores i (the highest index first)."""

    def score(self, batch):
        return torch.arange(N_ITEMS + 1, dtype=torch.float).expand(len(batch.target), N_ITEMS + 1).clone()


class MasksPad(recsys.Reranker):
    """Scores a candidate by its index, lowest first, and PAD (0) at -inf, as the LLM rerankers do."""

    def score(self, batch, candidates):
        return (-candidates.float()).masked_fill(candidates == 0, float("-inf"))


N_ITEMS = 15


def test_a_repeat_target_reaches_the_reranked_list_as_it_reaches_a_single_models_top(retriever, tiny_data):
    """The engine's rule for every model: seen items are masked except the target."""
    assert tiny_data.num_items == N_ITEMS
    model = Rerank(num_items=N_ITEMS, reranker=Reverse(), retriever=retriever, top_n=3)
    model.set_catalog(tiny_data.catalog)
    model.retriever = ByItem()
    batch = next(iter(tiny_data.test_dataloader()))
    seen = [[i for i in row if i > 0] for row in batch.seen.tolist()]
    repeat = torch.tensor([max(row) for row in seen])  # each user's highest seen item is the target
    ranks = model.rank(batch._replace(target=repeat))
    for row, target in enumerate(repeat.tolist()):
        shown = sorted((set(range(1, N_ITEMS + 1)) - set(seen[row])) | {target}, reverse=True)
        expected = shown[:3][::-1] + shown[3:]  # Reverse turns the top 3 around
        assert ranks[row] == expected.index(target) + 1


def test_rows_with_fewer_unseen_items_than_top_n_rank_them_in_the_rerankers_order(retriever, tiny_data):
    model = Rerank(num_items=N_ITEMS, reranker=MasksPad(), retriever=retriever, top_n=N_ITEMS)
    model.set_catalog(tiny_data.catalog)
    model.retriever = ByItem()
    batch = next(iter(tiny_data.test_dataloader()))
    scores = model.score(batch)
    assert not scores.isnan().any()
    shown = recsys.mask_seen(scores, batch.seen, batch.target)
    for row in range(len(batch.target)):
        unseen = int(shown[row].isfinite().sum())
        assert unseen < N_ITEMS  # the list is longer than what this user has left
        assert shown[row].argsort(descending=True)[:unseen].tolist() == sorted(shown[row].isfinite().nonzero().flatten().tolist())


def test_a_random_order_is_independent_per_user_and_per_seed():
    users = torch.arange(1, 201)
    candidates = torch.arange(1, 8).expand(len(users), 7)
    batch = recsys.Batch(history=candidates, target=candidates[:, 0], user=users)
    orders = [RandomReranker(seed).score(batch, candidates).argsort(dim=1) for seed in (0, 1)]
    assert len({tuple(order) for order in orders[0].tolist()}) >= 190  # 5,040 orders of 7 items
    assert (orders[0] == orders[1]).all(dim=1).sum() <= 2
    tops = orders[0][:, -1].bincount(minlength=7)  # each item first about 200 / 7 times
    assert tops.min() >= 12 and tops.max() <= 48


def test_popularity_reranker_orders_by_training_counts(tiny_data):
    reranker = PopularityReranker()
    reranker.on_catalog(tiny_data.catalog)
    candidates = torch.tensor([[1, 2, 3, 4]])
    scores = reranker.score(None, candidates)
    assert scores.tolist() == [[float(tiny_data.catalog.popularity[i]) for i in (1, 2, 3, 4)]]


def pointwise(tiny_data):
    from recsys_rerank.pointwise import PointwiseLLM

    reranker = PointwiseLLM(backbone="tiny-llama", history_items=2, chunk=3)
    reranker.on_catalog(tiny_data.catalog)
    return reranker


def test_the_pointwise_prompt_holds_the_recent_items_and_the_candidate(tiny_data):
    reranker = pointwise(tiny_data)
    batch = next(iter(tiny_data.test_dataloader()))
    candidates = torch.tensor([[3, 5]] * len(batch.target))
    prompt = reranker.prompts(batch, candidates)[0][1]
    recent = [i for i in batch.history[0].tolist() if i > 0][-2:]
    texts = recsys.llm.render_items(tiny_data.catalog, "title")
    listed = prompt.split("oldest first:\n")[1].split("\n\nWill the user")[0]
    assert listed.split("\n") == [texts[recent[0]], texts[recent[1]]]  # the 2 most recent, oldest first
    assert f"next: {texts[5]}\n" in prompt


def test_a_pointwise_score_does_not_depend_on_the_other_candidates_or_the_order(tiny_data):
    """Each candidate is asked about alone: permuting the list permutes the scores (prompts of
    different lengths share a left-padded forward pass without changing each other)."""
    reranker = pointwise(tiny_data)
    batch = next(iter(tiny_data.test_dataloader()))
    candidates = torch.tensor([[1, 2, 3, 4, 0]] * len(batch.target))
    scores = reranker.score(batch, candidates)
    assert scores.shape == candidates.shape and torch.isinf(scores[:, 4]).all()
    order = torch.tensor([3, 0, 4, 1, 2])
    again = reranker.score(batch, candidates[:, order])
    torch.testing.assert_close(again, scores[:, order], rtol=1e-4, atol=1e-4)
    assert reranker.state_dict() == {}  # the frozen LM is not saved with the model that holds the reranker


def test_under_candidate_lists_a_retriever_orders_each_list_before_the_reranker(retriever):
    """The reranker is shown each list best first by the retriever: Reverse then puts the
    retriever's worst candidate first."""
    data = recsys.SeqDataModule(path=str(recsys.testing.tiny_dataset()), max_len=5, eval_batch_size=8,
                                candidates=recsys.CandidateLists(num=5))
    data.setup("test")
    model = Rerank(num_items=data.num_items, reranker=Reverse(), retriever=retriever)
    model.set_catalog(data.catalog)
    batch = next(iter(data.test_dataloader()))
    base = model.retriever.score(batch).float()
    scores = model.score(batch)
    for row, listed in enumerate(batch.candidates.tolist()):
        by_retriever = sorted(listed, key=lambda i: -float(base[row, i]))
        assert sorted(listed, key=lambda i: -float(scores[row, i])) == by_retriever[::-1]


def test_a_reranker_is_chosen_by_its_short_name_on_the_command_line(tiny_path):
    """In a fresh interpreter nothing has imported the reranker classes: the CLI imports every
    registered one, so `--model.reranker PRP` resolves as `--model Rerank` does."""
    import re
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "recsys.cli", "fit", "--model", "Rerank", "--model.reranker", "PRP",
                          "--data", "SeqDataModule", f"--data.path={tiny_path}", "--print_config"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"reranker:\n +class_path: recsys_rerank(\.pairwise)?\.PRP\n", out.stdout)
