"""SASRec's loss and scores, against the definitions written out independently of the model's code."""

import math

import pytest
import torch

import recsys
from recsys.models.sasrec import SASRec


def _model(**kwargs):
    torch.manual_seed(0)
    return SASRec(num_items=7, max_len=4, d_model=8, num_heads=2, ffn_dim=16, **kwargs).eval()


def _by_hand(model, history, labels):
    """Mean over labelled positions of -log softmax over items 1..N (PAD is not an item)."""
    hidden = model.encode(history)  # (B, L, D)
    items = model.item_embedding.weight  # (N + 1, D)
    losses = []
    for b in range(history.shape[0]):
        for t in range(history.shape[1]):
            label = int(labels[b, t])
            if label == 0:
                continue
            logits = [float(hidden[b, t] @ items[i]) for i in range(1, model.num_items + 1)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(x - top) for x in logits))
            losses.append(log_z - logits[label - 1])
    return sum(losses) / len(losses)


def test_cross_entropy_is_over_items_only_at_labelled_positions():
    model = _model()
    history = torch.tensor([[0, 3, 5, 2], [4, 1, 6, 7]])
    labels = torch.tensor([[0, 0, 2, 6], [0, 6, 7, 3]])  # PAD positions and context carry label 0
    batch = recsys.Batch(history=history, target=labels[:, -1], user=torch.tensor([1, 2]), labels=labels)
    with torch.no_grad():
        assert float(model.loss(batch)) == pytest.approx(_by_hand(model, history, labels), rel=1e-5)


def test_scores_are_the_last_state_against_each_items_vector():
    model = _model()
    history = torch.tensor([[0, 3, 5, 2], [4, 1, 6, 7]])
    batch = recsys.Batch(history=history, target=torch.tensor([1, 2]), user=torch.tensor([1, 2]))
    with torch.no_grad():
        scores = model.score(batch)
        last = model.encode(history)[:, -1]  # (B, D)
        for item in range(1, model.num_items + 1):
            expected = last @ model.item_embedding.weight[item]
            assert torch.allclose(scores[:, item], expected, atol=1e-5), f"column {item} is not item {item}'s score"
