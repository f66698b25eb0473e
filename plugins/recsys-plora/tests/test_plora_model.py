"""RecLoRA and its CRM through the engine's CLI on a small rated dataset, with tiny random backbones."""

import math
import warnings
from pathlib import Path

import pytest
import torch
from recsys_plora import DIN, RecLoRA
from recsys_plora.prompts import rella_prompt, select_history

import recsys
from recsys.testing import run_cli

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))  # the plugin's own
CALLBACKS = ["--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.monitor=val/auc",
             "--trainer.callbacks.mode=max"]
TINY_LLM = {"backbone": "tiny-llama", "retrieval_backbone": "tiny-bert", "num_loras": 2, "rank": 4,
            "adapted_layers": 1, "prompt_items": 3, "lr": 0.01}


def _fit(model: list[str], data_path, root, epochs=2, data=()):
    args = ["fit", *model, "--data=CTRDataModule", f"--data.path={data_path}", "--data.max_len=8",
            "--data.batch_size=16", "--data.eval_batch_size=64", *data, "--seed_everything=0",
            "--trainer.accelerator=cpu", f"--trainer.max_epochs={epochs}", f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *CALLBACKS]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        return run_cli(args)


@pytest.fixture(scope="module")
def crm(ctr_tiny, tmp_path_factory):
    """A DIN trained through the CLI (its best checkpoint path and the CLI object)."""
    import recsys_plora.plugin

    from recsys.testing import registered

    with registered(recsys_plora.plugin):
        cli = _fit(["--model=DIN", "--model.dim=8", "--model.hidden=[16, 8]"], ctr_tiny,
                   tmp_path_factory.mktemp("din"), epochs=2)
    return cli.trainer.checkpoint_callback.best_model_path, cli


def _metrics(cli, prefix):
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith(prefix)}


def _by_hand(model, loader) -> tuple[float, float]:
    """AUC (pairwise: a positive above a negative counts 1, a tie 1/2) and LogLoss of the model's
    logits over a loader, from their definitions."""
    probs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            probs += [1 / (1 + math.exp(-x)) for x in model.logits(batch).tolist()]
            labels += batch.label.tolist()
    pos = [p for p, y in zip(probs, labels) if y]
    neg = [p for p, y in zip(probs, labels) if not y]
    assert pos and neg
    auc = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))
    logloss = -sum(math.log(p) if y else math.log(1 - p) for p, y in zip(probs, labels)) / len(labels)
    return auc, logloss


def test_din_fits_and_logs_auc_and_logloss(crm):
    path, cli = crm
    logged = _metrics(cli, "test/")  # the CLI validated, then tested, the best checkpoint
    assert set(logged) == {"test/auc", "test/logloss"}
    restored = recsys.RecModule.load_from_checkpoint(path).eval()
    assert type(restored) is DIN and restored.hparams.field_sizes == cli.datamodule.field_sizes
    # The logged values are the best checkpoint's AUC and LogLoss on the test samples ...
    auc, logloss = _by_hand(restored, cli.datamodule.test_dataloader())
    assert logged["test/auc"] == pytest.approx(auc, abs=1e-5)
    assert logged["test/logloss"] == pytest.approx(logloss, abs=1e-5)
    # ... and that checkpoint was selected on its validation AUC
    val_auc, _ = _by_hand(restored, cli.datamodule.val_dataloader())
    assert float(cli.trainer.checkpoint_callback.best_model_score) == pytest.approx(val_auc, abs=1e-5)


def test_personalized_recLoRA_fits_tests_and_round_trips(plora_plugin, crm, ctr_tiny, tmp_path):
    # recent retrieval: a random retrieval encoder (tiny-bert) would differ in the restored model
    args = ["--model=RecLoRA", *(f"--model.{k}={v}" for k, v in TINY_LLM.items()), f"--model.crm_checkpoint={crm[0]}",
            "--model.retrieval=recent"]
    cli = _fit(args, ctr_tiny, tmp_path)
    model, dm = cli.model, cli.datamodule
    assert model.head_kind == "yes-no"  # causal backbone: the LM head's Yes/No logits
    tested = _metrics(cli, "test/")
    assert set(tested) == {"test/auc", "test/logloss"} and all(math.isfinite(v) for v in tested.values())
    # Only adapters train: the bank and its gates, in the top block only.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("lora_" in n or ".gate." in n) and ".layers.1." in n for n in trainable)
    assert not any(p.requires_grad for p in model.crm.parameters())
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith("lora_B"))  # it trained
    best = cli.trainer.checkpoint_callback.best_model_path
    restored = recsys.RecModule.load_from_checkpoint(best)
    assert type(restored) is RecLoRA
    import lightning.pytorch as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    again = trainer.test(restored, datamodule=dm, verbose=False)[0]
    assert again["test/auc"] == pytest.approx(tested["test/auc"], abs=1e-6)
    assert again["test/logloss"] == pytest.approx(tested["test/logloss"], abs=1e-6)


def _model(ckpt=None, **overrides):
    return RecLoRA(num_items=30, **{**TINY_LLM, "crm_checkpoint": ckpt, **overrides})


def test_cached_frozen_blocks_give_the_same_logits_and_gradients(plora_plugin, crm, ctr_tiny):
    dm = recsys.CTRDataModule(path=str(ctr_tiny), max_len=8, batch_size=8)
    torch.manual_seed(0)
    cached = _model(crm[0], retrieval="recent")  # (a random retrieval encoder differs per model)
    plain = _model(crm[0], cache_states=False, retrieval="recent")
    plain.load_state_dict(cached.state_dict())
    for m in (cached, plain):
        m.attach(dm)
        m.eval()  # no gate dropout: the two must compute the same thing
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith("lora_B"):
                    p.copy_(torch.linspace(-0.1, 0.1, p.numel()).view_as(p))
    assert cached.encoder.num_frozen_layers == 1 and plain.encoder.num_frozen_layers == 0
    batch = next(iter(dm.train_dataloader()))
    for _ in range(2):  # the second pass reads the cache
        a, b = cached.logits(batch), plain.logits(batch)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    a.sum().backward()
    b.sum().backward()
    grads = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    assert grads
    for n, p in cached.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-3, atol=1e-5)


def test_shared_lora_is_peft_in_the_top_blocks_and_encoders_take_a_linear_head(plora_plugin, ctr_tiny):
    dm = recsys.CTRDataModule(path=str(ctr_tiny), max_len=8, batch_size=8)
    model = _model(backbone="tiny-bert", adapter="shared")
    assert model.head_kind == "linear" and model.encoder.pooling == "mean"
    lora = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all(".layer.1." in n for n in lora)  # peft's layers, top block only
    model.attach(dm)
    batch = next(iter(dm.train_dataloader()))
    model.loss(batch).backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_answer_tokens_are_derived_from_the_tokenizer(plora_plugin):
    model = _model(adapter="none")
    tok = model.tokenizer
    assert model.answer_ids == (tok(" Yes")["input_ids"][0], tok(" No")["input_ids"][0])
    assert not any(p.requires_grad for p in model.parameters())  # frozen with the yes-no head


def test_personalized_needs_a_crm_and_the_same_protocol(plora_plugin, crm, ctr_tiny):
    with pytest.raises(ValueError, match="crm_checkpoint"):
        _model(None)
    model = _model(crm[0])
    with pytest.raises(ValueError, match="threshold"):
        model.attach(recsys.CTRDataModule(path=str(ctr_tiny), threshold=3.0))
    with pytest.raises(ValueError, match="CTRDataModule"):
        model.attach(recsys.SeqDataModule(path=str(ctr_tiny)))


def test_retrieval_picks_the_most_similar_then_keeps_time_order():
    history = torch.tensor([[0, 1, 2, 3, 4]])
    mask = history > 0
    vectors = torch.nn.functional.normalize(torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [1.0, 0.05]]), dim=-1)  # item 5 = target
    positions, valid = select_history(history, mask, torch.tensor([5]), 2, "similar", vectors)
    assert history.gather(1, positions).tolist() == [[1, 3]] and valid.all()  # most similar, oldest first
    positions, valid = select_history(history, mask, torch.tensor([5]), 3, "recent")
    assert history.gather(1, positions).tolist() == [[2, 3, 4]]
    positions, valid = select_history(torch.tensor([[0, 0, 7]]), torch.tensor([[False, False, True]]),
                                      torch.tensor([5]), 2, "recent")
    assert valid.tolist() == [[False, True]]  # shorter histories are flagged, not padded with PAD items


def test_prompt_follows_the_rella_template():
    text = rella_prompt({"gender": "F", "occupation": "writer", "age": "29"},
                        [("Heat (1995)", 4.0), ("Clue (1985)", 1.0)], "Fargo (1996)")
    assert text.startswith("The user is a female. Her job is writer. Her age is 29.")
    assert "['0. Heat (1995) (4 stars)', '1. Clue (1985) (1 star)']" in text
    assert "deduce if she will like the movie ***Fargo (1996)***" in text
    assert text.endswith("You should ONLY tell me yes or no.")


def test_every_config_is_found():
    assert {p.name for p in CONFIGS} >= {"plora.yaml", "plora-minilm.yaml", "ctr-din.yaml", "plora-7b.yaml"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_parse(plora_plugin, config, capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--config", str(config), "--print_config"])
    out = capsys.readouterr().out
    assert "class_path: recsys_plora" in out and "monitor: val/auc" in out


@pytest.mark.slow
def test_smollm2_yes_no_head_and_chat_template(plora_plugin):
    model = RecLoRA(num_items=30, backbone="smollm2-135m-instruct", adapter="none", retrieval="recent")
    assert model.use_chat and model.head_kind == "yes-no"
    tok = model.tokenizer
    prefix = model.prompter.wrap("Do you like it?")
    for answer, token in zip(("Yes", "No"), model.answer_ids):
        assert tok(prefix + answer, add_special_tokens=False)["input_ids"][-1] == token


def test_compact_prompt_keeps_the_facts():
    from recsys_plora.prompts import compact_prompt

    text = compact_prompt({"gender": "M", "occupation": "artist", "age": "31"}, [("Heat (1995)", 4.0)], "Fargo (1996)")
    assert text == "male, artist, 31. rated: Heat (1995) 4. target movie: Fargo (1996)"
