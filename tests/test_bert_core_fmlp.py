"""BERT4Rec, CORE and FMLP-Rec: the model contract, and properties of each architecture checked
against definitions written out independently of the models' code."""

from __future__ import annotations

import cmath
import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

import recsys
import recsys.testing
from recsys.models.bert4rec import BERT4Rec
from recsys.models.core import CORE
from recsys.models.fmlp import FMLPRec




# ---- the contract ---------------------------------------------------------------------------


class TestBERT4Rec(recsys.testing.ModelContract):
    model = BERT4Rec
    max_epochs = 1  # the contract's two fits on the tiny data: one epoch is enough to check them
    init_args: ClassVar[dict] = {"max_len": 5, "d_model": 16, "ffn_dim": 32}
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.01, "dropout": 0.1, "attn_dropout": 0.1},
                             "data": {"batch_size": 32, "train_stride": 2}}


class TestCORE(recsys.testing.ModelContract):
    model = CORE
    max_epochs = 1  # the contract's two fits on the tiny data: one epoch is enough to check them
    init_args: ClassVar[dict] = {"max_len": 5, "d_model": 16, "ffn_dim": 32}
    learn: ClassVar[dict] = {"max_epochs": 5, "init_args": {"lr": 0.02}}


class TestFMLPRec(recsys.testing.ModelContract):
    model = FMLPRec
    max_epochs = 1  # the contract's two fits on the tiny data: one epoch is enough to check them
    init_args: ClassVar[dict] = {"max_len": 5, "d_model": 16, "ffn_dim": 32}
    learn: ClassVar[dict] = {"max_epochs": 5, "init_args": {"lr": 0.02, "dropout": 0.1}}


# ---- helpers ----------------------------------------------------------------------------------


def _batch(history, target=None, labels=None):
    history = torch.as_tensor(history)
    target = torch.as_tensor(target) if target is not None else torch.ones(len(history), dtype=torch.long)
    return recsys.Batch(history=history, target=target, user=torch.arange(1, len(history) + 1), labels=labels)


def _full_ce(scores, targets):
    """-log softmax over items 1..N (column 0, PAD, is not an item), by hand."""
    losses = []
    for row, target in zip(scores.tolist(), targets.tolist()):
        items = row[1:]
        top = max(items)
        losses.append(top + math.log(sum(math.exp(s - top) for s in items)) - items[target - 1])
    return sum(losses) / len(losses)


# ---- BERT4Rec ---------------------------------------------------------------------------------


def _bert(**kwargs):
    torch.manual_seed(0)
    return BERT4Rec(num_items=9, max_len=5, d_model=8, ffn_dim=16, init_std=0.5, **kwargs).eval()


def test_bert4rec_mask_token_is_outside_the_catalog_and_never_scored():
    model = _bert()
    assert model.mask_id == 10 and model.item_embedding.num_embeddings == 11
    with torch.no_grad():
        scores = model.score(_batch([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]]))
    assert scores.shape == (2, 10)  # PAD and items 1..9: the mask token has no column


def test_bert4rec_cloze_masks_real_items_only_by_the_count_rule():
    model = _bert(mask_ratio=0.4, ft_ratio=0.0)
    torch.manual_seed(1)
    sequence = torch.tensor([[0, 0, 0, 0, 7], [0, 0, 3, 4, 5], [1, 2, 3, 4, 5]] * 50)
    inputs, masked = model.cloze(sequence)
    real = sequence != 0
    assert not (masked & ~real).any(), "PAD positions were masked"
    expected = torch.tensor([1, 1, 2] * 50)  # max(1, round(0.4 * n)) for n = 1, 3, 5
    assert torch.equal(masked.sum(1), expected)
    assert (inputs[masked] == model.mask_id).all() and torch.equal(inputs[~masked], sequence[~masked])
    # Every real position of the full rows gets masked some time (a uniform draw, not a fixed one).
    assert masked[2::3].any(0).all()

    model.ft_ratio = 1.0  # next-item samples: the last item alone
    inputs, masked = model.cloze(sequence)
    assert masked[:, -1].all() and masked.sum() == len(sequence)


def test_bert4rec_next_item_samples_train_exactly_what_score_ranks():
    """A window masked at its target only is the evaluation input: the loss (no dropout) equals
    full CE over score()'s items; this pins the shift of the window and the mask token's place."""
    batch = _batch([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 8]], target=[6, 9, 2])
    for max_len in (5, 6):  # a full window shifts out its oldest item; with room for one more, none
        torch.manual_seed(0)
        model = BERT4Rec(num_items=9, max_len=max_len, d_model=8, ffn_dim=16, init_std=0.5, ft_ratio=1.0).eval()
        with torch.no_grad():
            assert float(model.loss(batch)) == pytest.approx(_full_ce(model.score(batch), batch.target), rel=1e-5)
            if max_len == 6:  # the oldest item of a full history counts
                assert not torch.allclose(model.score(batch)[1], model.score(batch._replace(
                    history=torch.tensor([[0, 0, 3, 4, 5], [7, 2, 3, 4, 5], [0, 0, 0, 0, 8]])))[1], atol=1e-4)


def test_bert4rec_is_bidirectional_and_ignores_padding():
    model = _bert()
    with torch.no_grad():
        out = model.encode(torch.tensor([[0, 0, 3, 4, 5], [0, 0, 3, 4, 6]]))
        assert not torch.allclose(out[0, 2], out[1, 2]), "the oldest item's output ignores a later item"
        # Left padding moves nothing: positions count from the oldest real item, PAD keys are masked.
        short = model.score(_batch([[3, 4, 5]]))
        padded = model.score(_batch([[0, 0, 3, 4, 5]]))
        assert torch.allclose(short, padded, atol=1e-5)
        # A full window is shifted left to make room for the mask token: its oldest item drops out.
        full = model.score(_batch([[1, 2, 3, 4, 5]]))
        assert torch.allclose(full, model.score(_batch([[9, 2, 3, 4, 5]])), atol=1e-6)
        assert not torch.allclose(full, model.score(_batch([[1, 2, 3, 4, 6]])), atol=1e-4)


# ---- CORE -------------------------------------------------------------------------------------


def _core(**kwargs):
    torch.manual_seed(0)
    return CORE(num_items=9, max_len=5, d_model=8, ffn_dim=16, **kwargs).eval()


def test_core_every_prefix_in_one_pass_equals_encoding_the_prefix_alone():
    """The tiled loss reads position t's session vector: it must be the one a window ending at t
    gives (causal weights, softmax renormalised over the prefix), so no later item leaks in."""
    for dnn_type in ("trm", "ave"):
        model = _core(dnn_type=dnn_type)
        history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [6, 2, 8, 1, 7]])
        with torch.no_grad():
            every = model.encode(history)
            for t in range(history.shape[1]):
                alone = model.encode(F.pad(history[:, : t + 1], (4 - t, 0)), last_only=True)[:, -1]
                real = history[:, t] != 0
                assert torch.allclose(every[real, t], alone[real], atol=1e-5), (dnn_type, t)
            assert (every[history == 0] == 0).all()


def test_core_scores_are_cosines_over_the_temperature():
    model = _core(dnn_type="ave", temperature=0.5)
    with torch.no_grad():
        scores = model.score(_batch([[0, 0, 0, 0, 4], [0, 0, 0, 2, 6]]))
        # One item: the session is that item's direction, so its cosine is 1.
        assert float(scores[0, 4]) == pytest.approx(2.0, rel=1e-5)
        assert float(scores[0].max()) == pytest.approx(2.0, rel=1e-5)
        # Two items: the mean of the two embeddings.
        emb = model.item_embedding.weight
        mean = (emb[2] + emb[6]) / 2
        for item in (1, 2, 6, 9):
            assert float(scores[1, item]) == pytest.approx(float(F.cosine_similarity(mean, emb[item], dim=0)) / 0.5, abs=1e-5)


def test_core_loss_is_full_ce_of_its_scores():
    model = _core()
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    labels = torch.tensor([[0, 0, 4, 5, 7], [0, 0, 0, 5, 8]])
    with torch.no_grad():
        assert float(model.loss(_batch(history, target=[7, 8]))) == pytest.approx(
            _full_ce(model.score(_batch(history)), torch.tensor([7, 8])), rel=1e-5)
        # Per-position labels: each labelled position scored as the prefix ending there.
        scores, targets = [], []
        for b in range(2):
            for t in range(5):
                if labels[b, t]:
                    scores.append(model.score(_batch(F.pad(history[b : b + 1, : t + 1], (4 - t, 0))))[0])
                    targets.append(int(labels[b, t]))
        expected = _full_ce(torch.stack(scores), torch.tensor(targets))
        assert float(model.loss(_batch(history, target=[7, 8], labels=labels))) == pytest.approx(expected, rel=1e-5)


# ---- FMLP-Rec ---------------------------------------------------------------------------------


def test_fmlp_filter_is_a_circular_convolution_with_the_learned_spectrum():
    """irfft(rfft(x) * W) along the sequence, ortho-normalised, computed here by plain sums."""
    torch.manual_seed(0)
    length, d = 5, 3
    layer = FMLPRec(num_items=4, max_len=length, d_model=d, ffn_dim=4).blocks[0].filter
    x = torch.randn(2, length, d)
    with torch.no_grad():
        got = torch.fft.irfft(torch.fft.rfft(x, dim=1, norm="ortho") * torch.view_as_complex(layer.filter), n=length,
                              dim=1, norm="ortho")
        layer.eval()
        out = layer(x)
    weights = [[complex(*layer.filter[k, c].tolist()) for c in range(d)] for k in range(length // 2 + 1)]
    for b in range(2):
        for c in range(d):
            spectrum = [sum(x[b, n, c].item() * cmath.exp(-2j * math.pi * k * n / length) for n in range(length))
                        / math.sqrt(length) for k in range(length)]
            # The real input's spectrum is Hermitian; the filter acts on k and (conjugated) on L - k.
            gains = [weights[k][c] if k <= length // 2 else weights[length - k][c].conjugate() for k in range(length)]
            for n in range(length):
                y = sum(spectrum[k] * gains[k] * cmath.exp(2j * math.pi * k * n / length) for k in range(length))
                assert abs(y.real / math.sqrt(length) - got[b, n, c].item()) < 1e-5
    assert torch.allclose(out, F.layer_norm(x + got, (d,), layer.norm.weight, layer.norm.bias, 1e-12), atol=1e-5)


def test_fmlp_trains_and_scores_at_the_newest_position_only():
    torch.manual_seed(0)
    model = FMLPRec(num_items=9, max_len=5, d_model=8, ffn_dim=16, init_std=0.5).eval()
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        # The filter mixes all positions: an earlier position's output reads a later item ...
        changed = history.clone()
        changed[:, -1] = 7
        assert not torch.allclose(model.encode(history)[:, 2], model.encode(changed)[:, 2], atol=1e-4)
        # ... so the loss is the newest position's next-item CE, the one score() ranks by.
        batch = _batch(history, target=[6, 9])
        assert float(model.loss(batch)) == pytest.approx(_full_ce(model.score(batch), batch.target), rel=1e-5)
        # Shorter windows are left-padded to the filter's length.
        assert torch.allclose(model.score(_batch([[4, 5]])), model.score(_batch([[0, 0, 0, 4, 5]])), atol=1e-6)
    with pytest.raises(ValueError, match="train_windows"):
        model.loss(_batch(history, target=[6, 9], labels=torch.ones_like(history)))
