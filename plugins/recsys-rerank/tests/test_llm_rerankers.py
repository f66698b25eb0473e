"""The LLM rerankers on a random 2-layer Llama (tiny-llama): their plumbing, not their accuracy.
What is checked is what must hold for any LM: sliding windows bubble the best items up, the
order remedies do what they say, PRP's two orders cancel the slot bias, FIRST generates nothing,
and a generated permutation is parsed forgivingly."""

from __future__ import annotations

import pytest
import torch

from recsys_rerank.listwise import FIRST, ListwiseLLM
from recsys_rerank.ordering import OrderedLLMReranker, slide
from recsys_rerank.pairwise import PRP


def test_sliding_windows_bubble_the_best_items_to_the_top_of_every_list():
    """Windows of 10, step 5, over lists of 25 and 8: the long list takes ceil(15 / 5) + 1 = 4
    calls, the short one 1, and both calls at a step are batched together."""
    calls = []

    def by_value(owners, windows):  # a perfect ranker: larger item = better
        calls.append(list(owners))
        return [sorted(w, reverse=True) for w in windows]

    long, short = list(range(1, 26)), [3, 1, 4, 8, 5, 9, 2, 6]
    out = slide([long, short], window=10, step=5, rank_windows=by_value)
    assert calls == [[0, 1], [0], [0], [0]]
    assert out[0][:5] == [25, 24, 23, 22, 21]  # the top window - step are final
    assert sorted(out[0]) == long and out[1] == sorted(short, reverse=True)


class Positional(OrderedLLMReranker):
    """An LLM with pure position bias: whatever it is shown first, it ranks first."""

    def rank_lists(self, histories, lists):
        return [list(items) for items in lists]


def positional(tiny_data, **kwargs):
    reranker = Positional(backbone="tiny-llama", **kwargs)
    reranker.on_catalog(tiny_data.catalog)
    return reranker


def test_order_and_bootstrap_show_and_cancel_position_bias(tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    candidates = torch.arange(1, 11).expand(len(batch.target), 10).clone()
    descending = torch.arange(10, 0, -1, dtype=torch.float).expand(candidates.shape)
    assert torch.equal(positional(tiny_data).score(batch, candidates), descending)
    assert torch.equal(positional(tiny_data, order="reversed").score(batch, candidates), descending.flip(1))
    shuffled = positional(tiny_data, order="shuffled").score(batch, candidates)
    assert not torch.equal(shuffled, descending) and torch.equal(shuffled.sort(dim=1).values, descending.flip(1))
    # 64 shuffled orders, Borda-averaged: no slot keeps its advantage (mean 5.5, spread far below 9)
    averaged = positional(tiny_data, bootstrap=64).score(batch, candidates)
    assert (averaged - 5.5).abs().max() < 2.5
    padded = candidates.masked_fill(candidates > 8, 0)
    assert torch.isinf(positional(tiny_data).score(batch, padded)[:, 8:]).all()


def llm(cls, tiny_data, **kwargs):
    reranker = cls(backbone="tiny-llama", history_items=2, **{"chunk": 4, **kwargs})
    reranker.on_catalog(tiny_data.catalog)
    return reranker


def test_listwise_answers_are_parsed_forgivingly(tiny_data):
    reranker = llm(ListwiseLLM, tiny_data)
    order = reranker.parse("[C] > [a] > [C] > [Z] > [ B ] and so on", [11, 12, 13, 14])
    assert order == [13, 11, 12, 14]
    assert (reranker.counts["repeated_ids"], reranker.counts["unknown_ids"], reranker.counts["missing_ids"]) == (1, 1, 1)
    assert reranker.parse("no identifiers at all", [11, 12]) == [11, 12]  # nothing named: the shown order


def test_first_ranks_by_one_forward_pass_per_window_and_generates_nothing(tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    rows = len(batch.target)
    candidates = torch.arange(1, 9).expand(rows, 8).clone()
    first = llm(FIRST, tiny_data, window=4, step=2, chunk=64)
    scores = first.score(batch, candidates)
    assert sorted(scores[0].tolist()) == [float(p) for p in range(1, 9)]  # a permutation, Borda points
    # 8 candidates in windows of 4, step 2: ceil((8 - 4) / 2) + 1 = 3 windows per list
    assert first.counts["prompts"] == 3 * rows and first.counts["forward_passes"] == 3
    assert first.counts["generated_tokens"] == 0
    prompt = first.list_prompt("recent", [3, 4])
    assert prompt.endswith("\nAnswer: [") and "[A] " + first.texts[3] in prompt and "[C]" not in prompt.split("e.g.")[0]
    with pytest.raises(ValueError, match="at most 26 candidates"):
        FIRST(backbone="tiny-llama", window=27)
    with pytest.raises(ValueError, match="window must be >= 2"):
        FIRST(backbone="tiny-llama", window=1)  # found when built, not at the first ranked batch


def test_the_recency_prompt_names_the_newest_history_item_once_more(tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    history = batch.history[0].tolist()
    newest, oldest = [i for i in history if i > 0][-1], [i for i in history if i > 0][-2]
    plain, focused = llm(FIRST, tiny_data), llm(FIRST, tiny_data, recency=True)
    assert "most recent" not in plain.list_prompt(plain.recent(history), [1, 2])
    prompt = focused.list_prompt(focused.recent(history), [1, 2])
    note = f"Note that the most recent one is: {focused.texts[newest]}\n"
    assert note in prompt and prompt.index(note) < prompt.index("Candidate items")
    assert plain.recent(history) + "\n" + note.rstrip() == focused.recent(history) and newest != oldest


def test_listwise_generation_returns_a_permutation(tiny_data):
    batch = next(iter(tiny_data.test_dataloader()))
    candidates = torch.arange(1, 6).expand(len(batch.target), 5).clone()
    listwise = llm(ListwiseLLM, tiny_data, chunk=8)
    scores = listwise.score(batch, candidates)
    assert (scores.sort(dim=1).values == torch.arange(1, 6, dtype=torch.float)).all()
    assert listwise.counts["generated_tokens"] > 0


def test_generation_counts_each_step_and_each_rows_tokens_up_to_its_end(tiny_data, monkeypatch):
    listwise = llm(ListwiseLLM, tiny_data, chunk=8)
    model, tokenizer = listwise.lm()
    end, pad = model.generation_config.eos_token_id, tokenizer.pad_token_id
    end = end[0] if isinstance(end, list) else end
    answers = torch.tensor([[31, end, pad, pad], [31, 32, 33, 34], [end, pad, pad, pad]])

    def generate(input_ids, **kwargs):  # three prompts, answered as above
        return torch.cat([input_ids, answers], dim=1)

    monkeypatch.setattr(model, "generate", generate)
    listwise.generate(["a", "b", "c"], max_new_tokens=4)
    # 2 + 4 + 1 tokens (an end token counts, the padding after it does not); 4 steps, one pass each
    assert listwise.counts["generated_tokens"] == 7 and listwise.counts["forward_passes"] == 4


def test_prp_cancels_the_slot_bias_with_both_orders(tiny_data):
    """all pairs in both orders: the same scores whatever order the list comes in, and a
    preference and its reverse add up to one."""
    batch = next(iter(tiny_data.test_dataloader()))
    candidates = torch.tensor([[1, 2, 3, 4, 5]] * len(batch.target))
    prp = llm(PRP, tiny_data, method="allpair")  # one LM: tiny-llama's weights are drawn when it loads
    given = prp.score(batch, candidates)
    prp.order = "reversed"
    assert torch.equal(given, prp.score(batch, candidates))
    prp.counts.clear()
    forward, backward = prp.preferences([("recent", 1, 2), ("recent", 2, 1)])
    assert forward + backward == pytest.approx(1.0, abs=1e-6) and forward != 0.5
    assert prp.counts["prompts"] == 4
