from typing import ClassVar

import pytest
import torch
from recsys_example_plugin import ItemKNN, plugin, precision

import recsys
import recsys.testing


class TestItemKNN(recsys.testing.ModelContract):
    model = ItemKNN
    plugin = plugin
    # Also logs this plugin's metric, so the contract checks it as well.
    init_args: ClassVar[dict] = {"window": 2, "metrics": ["hit", "ndcg", "precision@5"]}
    learn: ClassVar[dict] = {"max_epochs": 1}  # co-occurrence counts need one pass


def test_items_seen_together_are_recommended_together():
    model = ItemKNN(num_items=4, window=1)
    model.training_step(recsys.Batch(history=torch.tensor([[0, 1], [0, 3]]), target=torch.tensor([2, 4]),
                                     user=torch.tensor([1, 2])), 0)
    scores = model.score(recsys.Batch(history=torch.tensor([[0, 1]]), target=torch.tensor([0]), user=torch.tensor([1])))
    assert scores.shape == (1, 5) and scores[0].argmax() == 2


def test_precision():
    ranks = torch.tensor([1, 5, 6])
    assert precision(ranks, 5).tolist() == pytest.approx([0.2, 0.2, 0.0])
    with pytest.raises(ValueError, match="needs a cutoff"):
        precision(ranks, None)


def test_the_plugin_declares_the_engine_it_supports():
    with recsys.testing.registered(plugin):
        assert recsys.get_models()["ItemKNN"].obj is ItemKNN
        assert recsys.get_metrics()["precision"].obj is precision
