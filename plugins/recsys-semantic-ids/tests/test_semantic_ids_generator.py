"""Generators: code tokens, response-only labels, trie-constrained beams, exact ranking."""

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

import recsys
from recsys_semantic_ids.codes import CodeTable
from recsys_semantic_ids.generator import IGNORE, TIGER, SemanticIDGenerator, collate
from recsys_semantic_ids.trie import CodeTrie, TrieConstraint


@pytest.fixture(scope="module")
def test_batch(tiny_data):
    data = recsys.SeqDataModule(str(tiny_data), max_len=5)
    return next(iter(data.test_dataloader())), data.catalog


def _generator(codes_file, cls=SemanticIDGenerator, **kwargs):
    torch.manual_seed(0)
    args = dict(num_beams=6, ks=[5], metrics=["hit", "ndcg"])
    if cls is SemanticIDGenerator:
        args["backbone"] = "tiny-llama"
    else:
        args.update(decoder_layers=2, decoder_hidden=32, decoder_heads=2, decoder_intermediate=64)
    model = cls(15, codes_file, **{**args, **kwargs})
    return model.eval()


def test_trie_allows_only_prefixes_of_real_items_and_honours_exclusions():
    tokens = torch.tensor([[0, 0], [10, 20], [10, 21], [11, 20]])  # row 0 = PAD
    trie = CodeTrie(tokens)
    assert trie.allowed(()) == [10, 11]
    assert trie.allowed((10,)) == [20, 21] and trie.allowed((11,)) == [20]
    assert trie.allowed((12,)) == [] and trie.allowed((10, 20)) == []
    excluded = trie.exclusion([3])  # item 3 = (11, 20): no item is left under 11
    assert trie.allowed((), excluded) == [10] and trie.allowed((11,), excluded) == []
    assert trie.item_of[(10, 21)] == 2
    with pytest.raises(ValueError, match="share the code tuple"):
        CodeTrie(torch.tensor([[0, 0], [1, 2], [1, 2]]))


def test_constraint_masks_outside_the_trie_and_renormalises():
    trie = CodeTrie(torch.tensor([[0, 0], [1, 2], [1, 3], [4, 2]]))
    scores = torch.log_softmax(torch.randn(2, 6), -1)
    prompt = torch.tensor([[5, 5], [5, 5]])
    processor = TrieConstraint(trie, prompt_length=2, rows_per_prompt=1, exclusions=[Counter(), trie.exclusion([3])])
    out = processor(prompt, scores.clone())
    assert torch.isfinite(out[0, [1, 4]]).all() and torch.isinf(out[0, [0, 2, 3, 5]]).all()
    assert torch.isfinite(out[1, 1]) and torch.isinf(out[1, 4])  # item 3 excluded for prompt 1
    assert torch.allclose(out.exp().sum(1), torch.ones(2))
    step2 = processor(torch.tensor([[5, 5, 1], [5, 5, 4]]), scores.clone())
    assert torch.isfinite(step2[0, [2, 3]]).all() and torch.isinf(step2[1]).all()  # (4,) leads only to item 3


def test_code_tokens_are_added_one_per_level_and_code(codes_file):
    model = _generator(codes_file)
    names = [f"<{letter}_{c}>" for letter, size in zip("abc", [3, 3, 2]) for c in range(size)]
    ids = model.tokenizer.convert_tokens_to_ids(names)
    assert len(set(ids)) == 8 and min(ids) >= 50257  # new ids beyond GPT-2's vocabulary
    assert model.lm.get_input_embeddings().weight.shape[0] == len(model.tokenizer) == 50257 + 8
    table = CodeTable.read(codes_file)
    level_offsets = [0, 3, 6]
    expected = torch.tensor([[ids[level_offsets[l] + int(c)] for l, c in enumerate(row)] for row in table.codes])
    assert torch.equal(model.item_tokens[1:], expected)
    assert model.tokenizer.decode(model.item_tokens[1].tolist()) == "".join(names[level_offsets[l] + int(c)]
                                                                          for l, c in enumerate(table.codes[0]))


def test_labels_cover_the_response_only_token_by_token(codes_file, test_batch):
    model = _generator(codes_file, tasks=["seqrec", "item2index", "index2item", "fusion"])
    prompts = model.prompts
    codes = model.item_tokens[3].tolist()
    samples = [prompts.item2index("Dawn Patrol (1994)", codes), prompts.index2item(codes, "Dawn Patrol (1994)"),
               prompts.seqrec([model.item_tokens[1].tolist()], codes)]
    # The response is tokenised on its own: " Dawn Patrol (1994)" then EOS, never merged with the prompt.
    title_ids = model.tokenizer(" Dawn Patrol (1994)", add_special_tokens=False)["input_ids"]
    assert samples[1][1] == title_ids + [model.tokenizer.eos_token_id]
    assert samples[0][1] == codes and samples[2][1] == codes
    batch = collate(samples, model.pad_id)
    p = max(len(s[0]) for s in samples)
    r = batch["response_length"]
    assert r == max(len(s[1]) for s in samples)
    for row, (prompt, response) in enumerate(samples):
        assert batch["input_ids"][row, p - len(prompt):p].tolist() == prompt
        assert batch["input_ids"][row, p:p + len(response)].tolist() == response
        assert batch["labels"][row].tolist() == response + [IGNORE] * (r - len(response))
        real = batch["attention_mask"][row].bool()
        assert batch["position_ids"][row][real].tolist() == list(range(len(prompt) + len(response)))
    # The loss is the mean over response tokens of -log p(token | everything before it).
    loss = model.response_loss(samples)
    logits = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"]).logits
    nll = []
    for row, (_, response) in enumerate(samples):
        for j, token in enumerate(response):
            nll.append(-torch.log_softmax(logits[row, p + j - 1], -1)[token])
    assert torch.allclose(loss, torch.stack(nll).mean(), atol=1e-5)


@pytest.mark.parametrize("cls", [SemanticIDGenerator, TIGER])
def test_constrained_beams_return_real_unseen_distinct_items(codes_file, test_batch, cls):
    batch, _ = test_batch
    model = _generator(codes_file, cls)
    reported = []
    model.report_metric = lambda name, values: reported.append((name, values))
    ids, scores = model.beam_search(batch, 5)
    [(name, valid)] = reported
    assert name == "valid_rate" and len(valid) > 0 and (valid == 1).all()  # 100% of beams are real, unseen items
    assert ids.shape == (len(batch.target), 5) and ((ids >= 1) & (ids <= 15)).all()
    for row in range(len(ids)):
        assert len(set(ids[row].tolist())) == 5
        assert not set(ids[row].tolist()) & set(batch.seen[row].tolist()) - {0}
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@torch.no_grad()
def _brute_force(model, prompt, seen):
    """log P(item) for every unseen item: one full forward per item, the constrained
    distribution at each level computed from the trie directly."""
    trie, excluded = model.trie, model.trie.exclusion(seen)
    out = {}
    for item in range(1, 16):
        if item in seen:
            continue
        tokens = model.item_tokens[item].tolist()
        ids = torch.tensor([prompt + tokens])
        logits = model.lm(input_ids=ids).logits[0].float()
        total = 0.0
        for level, token in enumerate(tokens):
            allowed = trie.allowed(tokens[:level], excluded)
            row = torch.log_softmax(logits[len(prompt) + level - 1, allowed], -1)
            total += float(row[allowed.index(token)])
        out[item] = total
    return out


@pytest.mark.parametrize("cls", [pytest.param(SemanticIDGenerator, marks=pytest.mark.slow), TIGER])
def test_exact_ranking_equals_brute_force_and_agrees_with_the_beams(codes_file, test_batch, cls):
    batch, _ = test_batch
    model = _generator(codes_file, cls, score_chunk=4)  # several chunks of prefixes
    scores = model.score(batch)
    prompts = model._prompts(batch)
    for row in range(2):
        seen = set(batch.seen[row].tolist()) - {0}
        expected = _brute_force(model, prompts[row], seen)
        got = {i: float(scores[row, i]) for i in expected}
        assert got == pytest.approx(expected, abs=1e-4)
        assert all(scores[row, i] == float("-inf") for i in seen)
        assert sum(torch.tensor(list(got.values())).exp()) == pytest.approx(1.0, abs=1e-4)
    # A beam's score is its item's exact score; beam search may miss items (beam noise) ...
    ids, top = model.beam_search(batch, 5)
    assert torch.allclose(top, scores.gather(1, ids), atol=1e-4)
    # ... but with as many beams as items it is exhaustive, and both rankings agree.
    model.num_beams = 16
    ids, top = model.beam_search(batch, 5)
    masked = scores.clone()
    masked[:, 0] = float("-inf")
    exact = masked.topk(5, dim=1)
    assert torch.equal(ids, exact.indices)
    assert torch.allclose(top, exact.values, atol=1e-4)


def test_random_ids_keep_the_shape_and_change_the_codes(codes_file):
    semantic = _generator(codes_file)
    shuffled = _generator(codes_file, random_ids=True, random_ids_seed=3)
    assert shuffled.codes.shape == semantic.codes.shape
    assert not torch.equal(shuffled.codes, semantic.codes)
    assert len(torch.unique(shuffled.codes[1:], dim=0)) == 15
    assert (shuffled.codes[1:] < torch.tensor([3, 3, 2])).all()


def test_lora_trains_the_new_code_rows_and_adapters_only(codes_file, test_batch):
    batch, catalog = test_batch
    model = _generator(codes_file, lora_r=4, pretrained=False).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    embeddings = model._causal().get_input_embeddings()
    before = embeddings(model.item_tokens[1:].flatten()).detach().clone()
    other = embeddings(torch.tensor([100, 200])).detach().clone()
    optimizer = model.configure_optimizers()
    model.loss(batch).backward()
    optimizer.step()
    assert not torch.allclose(embeddings(model.item_tokens[1:].flatten()), before)
    assert torch.equal(embeddings(torch.tensor([100, 200])), other)


def test_errors_name_the_field(codes_file, tmp_path):
    with pytest.raises(ValueError, match="model.tasks"):
        _generator(codes_file, tasks=["item2index"])
    with pytest.raises(ValueError, match="model.ranking"):
        _generator(codes_file, ranking="greedy")
    with pytest.raises(ValueError, match="15 items|items, the data"):
        SemanticIDGenerator(14, codes_file, backbone="tiny-llama")
    with pytest.raises(ValueError, match="TIGER trains on code sequences only"):
        TIGER(15, codes_file, tasks=["seqrec", "index2item"])


def _with_repeats(batch):
    """The same windows, every other target replaced by an item of its own history (a repeat)."""
    target = batch.target.clone()
    target[::2] = batch.seen[::2, -1]
    return batch._replace(target=target)


def test_exact_ranking_hits_a_repeat_as_a_dense_model_would(codes_file, test_batch):
    batch, _ = test_batch
    batch = _with_repeats(batch)
    model = _generator(codes_file, TIGER, ranking="exact")
    ranks = model.rank(batch)
    # score() gives excluded items -inf; a repeat is ranked from scores that exclude nothing,
    # masked by the engine (seen items out, the target kept), as beam ranking re-queries
    free = model.score(batch._replace(seen=None))
    masked = recsys.mask_seen(free.clone(), batch.seen, batch.target)
    expected = recsys.dense_ranks(masked, batch.target)
    assert torch.equal(ranks[::2], expected[::2]) and (ranks[::2] < 15).all()
    own = recsys.dense_ranks(recsys.mask_seen(model.score(batch), batch.seen, batch.target), batch.target)
    assert torch.equal(ranks[1::2], own[1::2])  # other windows: the model's own scores


def test_beam_ranking_hits_a_repeat_exactly_when_exact_ranking_does(codes_file, test_batch):
    batch, _ = test_batch
    batch = _with_repeats(batch)
    model = _generator(codes_file, TIGER, num_beams=16)  # as many beams as items: exhaustive
    beam = model.rank(batch)
    model.ranking = "exact"
    exact = model.rank(batch)
    listed = exact <= 6  # hit@5 asks for a list of 6
    assert listed[::2].any() and torch.equal(beam[listed], exact[listed]) and (beam[~listed] > 6).all()


def test_beam_fillers_are_unlisted(codes_file, test_batch, monkeypatch):
    batch, _ = test_batch
    model = _generator(codes_file, TIGER)
    best = [next(i for i in range(1, 16) if i not in set(row.tolist())) for row in batch.seen]

    def generate(input_ids, attention_mask, generation_config, logits_processor):
        # one finished beam per prompt (its first unseen item), every other slot empty
        beams = generation_config.num_beams
        codes = model.item_tokens[torch.tensor(best)].repeat_interleave(beams, 0)
        scores = torch.full((len(best), beams), -1e9)
        scores[:, 0] = -0.5
        return SimpleNamespace(sequences=torch.cat([input_ids.repeat_interleave(beams, 0), codes], 1),
                               sequences_scores=scores.flatten())

    monkeypatch.setattr(model.lm, "generate", generate)
    ids, scores = model.recommend(batch, 5)
    assert ids[:, 0].tolist() == best and (scores[:, 0] == -0.5).all() and (scores[:, 1:] == float("-inf")).all()
    # a target among the fillers (second place in the list) is a miss: it ties with every unlisted item
    filler = batch._replace(target=ids[:, 1])
    unmasked = 15 - (batch.seen != 0).sum(1)
    assert torch.equal(model.rank(filler), unmasked)
    assert torch.equal(model.rank(batch._replace(target=ids[:, 0])), torch.ones(len(best), dtype=torch.long))


def test_a_checkpoint_ranks_as_trained_unless_told(codes_file, tmp_path):
    import lightning

    model = _generator(codes_file, TIGER, ranking="exact")
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)
    path = tmp_path / "exact.ckpt"
    torch.save(checkpoint, path)
    assert "ranking" not in checkpoint["hyper_parameters"]  # LightningCLI would let it override --model.ranking
    assert recsys.RecModule.load_from_checkpoint(path).ranking == "exact"
    assert recsys.RecModule.load_from_checkpoint(path, ranking="beam").ranking == "beam"
    assert _generator(codes_file, TIGER).ranking == "beam"  # a new model: beam by default


def test_valid_rate_is_logged_by_beam_evaluation_only(codes_file, tiny_data):
    import lightning.pytorch as pl

    data = recsys.SeqDataModule(str(tiny_data), max_len=5)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    model = _generator(codes_file, TIGER)
    assert "test/valid_rate" in model.logged_metrics("test") and "train/valid_rate" not in model.logged_metrics("train")
    trainer.test(model, datamodule=data)
    # the mean over every returned beam of the epoch: constrained beams are all real, unseen items
    assert trainer.callback_metrics["test/valid_rate"] == 1.0
    exact = _generator(codes_file, TIGER, ranking="exact")
    assert "test/valid_rate" not in exact.logged_metrics("test")
    trainer.test(exact, datamodule=data)
    assert "test/valid_rate" not in trainer.callback_metrics
