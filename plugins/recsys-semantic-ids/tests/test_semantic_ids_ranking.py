"""The two rankings' own modules: ExactScorer (and its prefix structure) and TrieBeamRanker,
each on a tiny Llama built here (no recsys model around them)."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recsys_semantic_ids.beam_ranker import UNFILLED, TrieBeamRanker
from recsys_semantic_ids.exact_scorer import (ExactScorer, LevelGroups, PrefixStructure, group_log_normaliser,
                                              token_logits)
from recsys_semantic_ids.trie import CodeTrie

# 5 items over 3 levels of sizes (2, 2, 2); code tokens start at 2 (0 = PAD, 1 = BOS), 2 per level
CODES = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1], [1, 1, 1]])
TOKENS = torch.cat([torch.zeros(1, 3, dtype=torch.long), CODES + torch.tensor([2, 4, 6])])  # (N + 1, L)


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return LlamaForCausalLM(config).eval()


def _scorer(lm, chunk=2):
    return ExactScorer(lm.model, lm.get_output_embeddings(), TOKENS, PrefixStructure.from_codes(CODES, TOKENS[1:]),
                       chunk)


def test_prefix_structure_groups_items_by_prefix():
    structure = PrefixStructure.from_codes(CODES, TOKENS[1:])
    level0, level1, level2 = structure.levels
    assert level0.group.tolist() == [0] * 5 and level0.pair.tolist() == [0, 0, 0, 1, 1]
    assert level1.group.tolist() == [0, 0, 0, 1, 1] and level1.pair.tolist() == [0, 0, 1, 2, 3]
    assert level1.pair_group.tolist() == [0, 0, 1, 1]
    assert level2.group.tolist() == [0, 0, 1, 2, 3]
    assert structure.prefixes.shape == (4, 2)  # (P, L - 1): 4 distinct 2-prefixes
    assert torch.equal(structure.prefixes[structure.row_of], TOKENS[1:, :2])


def test_group_log_normaliser_counts_each_live_token_once():
    # two groups; group 0 has tokens (pairs) 0 and 1, token 0 shared by items 0 and 1; group 1 has pair 2
    groups = LevelGroups(group=torch.tensor([0, 0, 0, 1]), pair=torch.tensor([0, 0, 1, 2]),
                         pair_group=torch.tensor([0, 0, 1]))
    logits = torch.tensor([1.0, 1.0, 3.0, 0.5])
    lse = group_log_normaliser(logits, groups, torch.ones(4, dtype=torch.bool))
    assert lse.tolist() == pytest.approx([math.log(math.e + math.e ** 3), 0.5])
    # item 2 dead: its token leaves group 0's normaliser; item 3 dead: group 1 has no live token
    lse = group_log_normaliser(logits, groups, torch.tensor([True, True, False, False]))
    assert lse[0] == pytest.approx(1.0) and lse[1] == float("-inf")


def test_token_logits_equal_the_full_head_gathered():
    torch.manual_seed(0)
    hidden, tokens = torch.randn(4, 6), torch.tensor([0, 3, 3, 7])
    for head in (nn.Linear(6, 8), nn.Linear(6, 8, bias=False), nn.Sequential(nn.Linear(6, 8))):
        expected = head(hidden)[torch.arange(4), tokens]
        assert torch.allclose(token_logits(head, hidden, tokens), expected, atol=1e-6)


@torch.no_grad()
def test_exact_scorer_equals_one_forward_per_item(tiny_lm):
    trie = CodeTrie(TOKENS)
    prompt, seen = [1, 2, 4, 6], [3]
    scores = _scorer(tiny_lm).score([prompt, prompt], torch.tensor([[0, 3], [0, 0]]))  # (B, N + 1)
    assert scores.shape == (2, 6) and scores[:, 0].isinf().all() and scores[0, 3] == float("-inf")
    excluded = trie.exclusion(seen)
    for item in (1, 2, 4, 5):
        tokens = TOKENS[item].tolist()
        logits = tiny_lm(input_ids=torch.tensor([prompt + tokens])).logits[0]
        expected = 0.0
        for level, token in enumerate(tokens):
            allowed = trie.allowed(tokens[:level], excluded)
            expected += float(torch.log_softmax(logits[len(prompt) + level - 1, allowed], -1)[allowed.index(token)])
        assert float(scores[0, item]) == pytest.approx(expected, abs=1e-5)
    assert scores[0].exp().sum() == pytest.approx(1.0, abs=1e-5) and scores[1].exp().sum() == pytest.approx(1.0, abs=1e-5)
    # the prefix chunking changes nothing
    assert torch.allclose(_scorer(tiny_lm, chunk=1).score([prompt]), scores[1:], atol=1e-6)


def test_beam_ranker_lists_real_unseen_distinct_items_then_fillers():
    trie = CodeTrie(TOKENS)

    class FixedBeams(nn.Module):
        """generate() returning, per prompt: item 2, item 2 again, item 3 (seen), a non-item, an empty slot."""

        def generate(self, input_ids, attention_mask, generation_config, logits_processor):
            beams = generation_config.num_beams
            rows = [TOKENS[2], TOKENS[2], TOKENS[3], torch.tensor([3, 4, 6]), TOKENS[1]]
            codes = torch.stack(rows + [TOKENS[1]] * (beams - len(rows))).repeat(len(input_ids), 1)
            scores = torch.tensor([-0.1, -0.2, -0.3, -0.4] + [-1e9] * (beams - 4)).repeat(len(input_ids))
            return SimpleNamespace(sequences=torch.cat([input_ids.repeat_interleave(beams, 0), codes], 1),
                                   sequences_scores=scores)

    ranker = TrieBeamRanker(FixedBeams(), trie, pad_id=0, num_beams=5)
    result = ranker.rank([[1], [1, 2, 4, 6]], k=3, seen=torch.tensor([[0, 3], [1, 0]]))
    # row 0: item 2 once, then fillers (unlisted, unseen first); row 1 (item 1 seen): 2, 3, then a filler
    assert result.items.tolist() == [[2, 1, 4], [2, 3, 4]]
    assert torch.equal(result.scores, torch.tensor([[-0.1, -math.inf, -math.inf], [-0.1, -0.3, -math.inf]]))
    # one flag per non-empty beam: the repeat is valid, the seen item and the non-item are not
    assert result.valid.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert UNFILLED > -1e9


@torch.no_grad()
def test_exhaustive_beams_rank_as_the_exact_scorer(tiny_lm):
    prompts, seen = [[1, 2, 4, 6], [1, 3, 5]], torch.tensor([[0, 3], [0, 0]])
    exact = _scorer(tiny_lm).score(prompts, seen)
    result = TrieBeamRanker(tiny_lm, CodeTrie(TOKENS), pad_id=0, num_beams=5).rank(prompts, 3, seen)
    best = exact.topk(3, dim=1)
    assert torch.equal(result.items, best.indices)
    assert torch.allclose(result.scores, best.values, atol=1e-5)
    assert (result.valid == 1).all()
