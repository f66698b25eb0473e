"""HLLM and Lite-LLM4Rec on tiny random backbones."""

from pathlib import Path

import pytest
import torch

from recsys.lightning_cli import run_cli
from recsys.models.base import RecModule
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
    metrics = cli.trainer.callback_metrics
    assert 0 <= float(metrics["test/ndcg@10"]) <= 1
    hparams = (Path(cli.trainer.log_dir) / "hparams.yaml").read_text()
    item_llm = cli.model.hparams.item_llm
    assert "backbone_sources" in hparams and f"name: {item_llm}" in hparams  # which item LLM the run used
    best = cli.trainer.checkpoint_callback.best_model_path
    restored = RecModule.load_from_checkpoint(best)
    assert type(restored).__name__ == model
    for (name, a), (_, b) in zip(cli.model.state_dict().items(), restored.state_dict().items()):
        if "items.encoder" in name or "user" in name:
            assert a.shape == b.shape


def test_training_reduces_the_loss_and_logs_negatives(hllm_plugin, tiny_path, tmp_path):
    cli = run_cli(["fit", "--model=HLLM", *TINY_ARGS, "--model.num_negatives=8", "--model.lr=0.01",
                   "--data=SeqDataModule", "--trainer.max_epochs=6", "--trainer.log_every_n_steps=1",
                   "--test_after_fit=false", *common(tiny_path, tmp_path)])
    metrics = cli.trainer.callback_metrics
    assert 0 < float(metrics["train/effective_negatives"]) <= 8
    assert 0.01 <= float(metrics["train/temperature"]) <= 0.2


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
