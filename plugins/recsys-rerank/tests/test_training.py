"""Trained rerankers: the training lists Rerank builds, a reranker that learns through `recsys fit`,
and the cross-encoder's gradients, on the packaged tiny dataset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import recsys
import recsys.testing
from recsys_rerank import plugin
from recsys_rerank.cross_encoder import CrossEncoder
from recsys_rerank.model import Rerank
from recsys_rerank.rerankers import RandomReranker


class ItemBias(recsys.Reranker):
    """A learned score per item: trained on lists holding each window's target, it learns how
    often each item is a target."""

    def __init__(self, num_items: int = 15):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_items + 1))

    def score(self, batch, candidates):
        return self.bias.detach()[candidates]

    def loss(self, batch, candidates):
        return nn.functional.cross_entropy(self.bias[candidates], (candidates == batch.target[:, None]).float().argmax(1))


def training_batch(tiny_data):
    return next(iter(tiny_data.train_dataloader()))


def test_each_training_list_holds_its_target_once_at_a_random_place(tiny_data):
    torch.manual_seed(0)
    model = Rerank(num_items=tiny_data.num_items, reranker=ItemBias(), top_n=6)
    batch = training_batch(tiny_data)
    lists = model.training_candidates(batch)
    assert lists.shape == (len(batch.target), 6) and (lists > 0).all() and (lists <= tiny_data.num_items).all()
    assert ((lists == batch.target[:, None]).sum(1) == 1).all()
    places = (lists == batch.target[:, None]).float().argmax(1)
    assert len(set(places.tolist())) > 1  # not always the same slot: a listwise reranker could learn the slot


def test_with_a_retriever_the_rest_of_the_list_is_its_top_unseen_items(retriever, tiny_data):
    model = Rerank(num_items=tiny_data.num_items, reranker=ItemBias(), retriever=retriever, top_n=4)
    batch = training_batch(tiny_data)
    lists = model.training_candidates(batch)
    scores = recsys.mask_seen(model.retriever.score(batch).float(), batch.history)
    for row, listed in enumerate(lists.tolist()):
        target = int(batch.target[row])
        others = [i for i in listed if i != target]
        scores[row, target] = float("-inf")
        assert others == scores[row].topk(3).indices.tolist()  # in the retriever's order
        assert not set(others) & set(batch.history[row].tolist())


def test_a_list_longer_than_the_unseen_items_is_filled_with_seen_ones_never_pad_or_the_target(retriever, tiny_data):
    model = Rerank(num_items=tiny_data.num_items, reranker=ItemBias(), retriever=retriever, top_n=tiny_data.num_items)
    batch = training_batch(tiny_data)
    lists = model.training_candidates(batch)
    assert (lists > 0).all() and ((lists == batch.target[:, None]).sum(1) == 1).all()
    assert all(len(set(row)) == len(row) for row in lists.tolist())  # every item of the catalog once


def test_a_trainable_reranker_learns_through_fit_and_a_zero_shot_one_takes_no_step(tiny_path, tmp_path):
    common = ["--data=SeqDataModule", f"--data.path={tiny_path}", "--data.max_len=5", "--trainer.logger=false",
              '--data.candidates={"class_path": "recsys.CandidateLists", "init_args": {"num": 5}}',
              "--trainer.enable_progress_bar=false", "--test_after_fit=false"]
    with recsys.testing.registered(plugin, "recsys-rerank"):
        cli = recsys.testing.run_cli(["fit", "--model=Rerank", f"--model.reranker={ItemBias.__module__}.ItemBias",
                                      "--model.top_n=5", "--model.lr=0.05", "--trainer.max_epochs=30",
                                      f"--trainer.default_root_dir={tmp_path / 'a'}", *common])
        bias = cli.model.reranker.bias.detach()[1:]
        counts = torch.bincount(torch.cat([b.target for b in cli.datamodule.train_dataloader()]),
                                minlength=len(bias) + 1)[1:].float()
        # items that are targets more often score higher
        assert torch.corrcoef(torch.stack([bias, counts]))[0, 1] > 0.8
        zero = recsys.testing.run_cli(["fit", "--model=Rerank", "--model.reranker=RandomReranker",
                                       "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'b'}", *common])
        assert zero.trainer.global_step == 0 and not zero.model.automatic_optimization


def test_the_cross_encoder_trains_its_head_and_encoder_and_scores_each_pair_alone(tiny_data):
    torch.manual_seed(0)
    reranker = CrossEncoder(backbone="tiny-bert", history_items=2, max_length=32, chunk=5)
    reranker.on_catalog(tiny_data.catalog)
    batch = training_batch(tiny_data)
    candidates = torch.stack([torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])]).repeat(len(batch.target), 1)[
        :len(batch.target)]
    candidates[:, 0] = batch.target
    reranker.loss(batch, candidates).backward()
    assert reranker.head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in reranker.encoder.parameters())
    reranker.eval()
    scores = reranker.score(batch, candidates)
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(reranker.score(batch, candidates[:, order]), scores[:, order], rtol=1e-4, atol=1e-4)
    padded = candidates.clone()
    padded[:, 3] = 0
    assert torch.isinf(reranker.score(batch, padded)[:, 3]).all()
    reranker.max_length = 8  # shorter than a candidate's text alone: both segments are cut, no error
    assert reranker.score(batch, candidates).isfinite().all()


def test_the_zero_shot_rerank_has_no_trainable_parameters():
    model = Rerank(num_items=15, reranker=RandomReranker())
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("rank_weight", [0.0, 10.0])  # L_LM alone, and with L_rank
def test_first_with_lora_learns_the_target_identifier_and_trains_only_its_adapters(tiny_data, rank_weight):
    """Optimizer steps on one batch of training lists whose target is always the third
    candidate, [C]: the loss falls and every list ranks its target first (FIRST's scores are the
    identifier logits); only LoRA parameters train."""
    from recsys_rerank.listwise import FIRST

    torch.manual_seed(0)
    first = FIRST(backbone="tiny-llama", history_items=2, lora_r=4, lora_dropout=0.0, window=6, chunk=16,
                  rank_weight=rank_weight)
    first.on_catalog(tiny_data.catalog)
    model = Rerank(num_items=tiny_data.num_items, reranker=first, top_n=6)
    assert model.automatic_optimization
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    batch = training_batch(tiny_data)
    lists = model.training_candidates(batch)
    rows, where = torch.arange(len(lists)), (lists == batch.target[:, None]).float().argmax(1)
    lists[rows, where] = lists[:, 2]
    lists[:, 2] = batch.target

    before = first.loss(batch, lists).item()
    assert (first.score(batch, lists)[:, 2] < 6).any()  # Borda points: 6 = ranked first of 6
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        first.loss(batch, lists).backward()
        optimizer.step()
    assert first.loss(batch, lists).item() < before - 0.5
    assert (first.score(batch, lists)[:, 2] == 6).all()


def test_a_rerankers_frozen_pretrained_weights_stay_out_of_checkpoints():
    class Frozen(RandomReranker):
        def __init__(self):
            super().__init__()
            self.lm = nn.Linear(2, 2).requires_grad_(False)
            self.adapter = nn.Linear(2, 1)
            self.backbone_prefixes = {"lm.": {"name": "x", "pretrained": True}}

    model = Rerank(num_items=15, reranker=Frozen())
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {"reranker.adapter.weight", "reranker.adapter.bias"}
