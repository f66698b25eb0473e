"""GRU4Rec, NARM and Caser: the model contract, and checks of each architecture against a
hand-written reference (a GRU run over the real items only, NARM's attention, Caser's
convolutions as explicit sliding windows)."""

from __future__ import annotations

from typing import ClassVar, cast

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import recsys.testing
from recsys.data.batch import Batch
from recsys.models.caser import Caser
from recsys.models.gru4rec import GRU4Rec
from recsys.models.narm import NARM

N = 12  # items in the hand-made batches




class TestGRU4Rec(recsys.testing.ModelContract):
    model = GRU4Rec
    init_args: ClassVar[dict] = {"embedding_size": 8, "hidden_size": 16}
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.01}, "data": {"batch_size": 32}}


class TestNARM(recsys.testing.ModelContract):
    model = NARM
    init_args: ClassVar[dict] = {"embedding_size": 8, "hidden_size": 16}
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.01}, "data": {"batch_size": 32}}


class TestCaser(recsys.testing.ModelContract):
    model = Caser
    init_args: ClassVar[dict] = {"max_len": 5, "embedding_size": 8, "n_h": 2, "n_v": 2}
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.01}, "data": {"batch_size": 64}}


# ---- references ------------------------------------------------------------------------------


def _gru_reference(gru: torch.nn.GRU, inputs: Tensor) -> Tensor:
    """(T, d) inputs of the real items only -> (T, H) states of a one-layer bias-free GRU, by its
    equations (r, z, n gates in PyTorch's order), from a zero state."""
    w_ir, w_iz, w_in = cast(Tensor, gru.weight_ih_l0).chunk(3)
    w_hr, w_hz, w_hn = cast(Tensor, gru.weight_hh_l0).chunk(3)
    h = torch.zeros(gru.hidden_size)
    states = []
    for x in inputs:
        r = torch.sigmoid(w_ir @ x + w_hr @ h)
        z = torch.sigmoid(w_iz @ x + w_hz @ h)
        n = torch.tanh(w_in @ x + r * (w_hn @ h))
        h = (1 - z) * n + z * h
        states.append(h)
    return torch.stack(states)


def _batch(history: list[list[int]], user: list[int] | None = None) -> Batch:
    h = torch.tensor(history)
    return Batch(history=h, target=torch.ones(len(h), dtype=torch.long),
                 user=torch.tensor(user if user is not None else [1] * len(h)))


def _nonzero_pad_row(model) -> None:
    """Give the PAD embedding row values, so a model that reads it is caught."""
    with torch.no_grad():
        model.item_embedding.weight[0].normal_()


HISTORIES = [[0, 0, 0, 3, 7, 2], [5, 1, 9, 9, 4, 11], [0, 0, 0, 0, 0, 6]]


# ---- GRU4Rec ---------------------------------------------------------------------------------


def test_gru4rec_matches_a_gru_run_over_the_real_items_only():
    """Every real position's output is dense(GRU state over the real items up to it): the PAD
    prefix leaves the state exactly as the real items alone would, whatever the PAD row holds."""
    torch.manual_seed(0)
    model = GRU4Rec(N, embedding_size=6, hidden_size=5).eval()
    _nonzero_pad_row(model)
    history = torch.tensor(HISTORIES)
    with torch.no_grad():
        out = model.encode(history)
        for row, items in enumerate(history):
            real = items[items != 0]
            expected = model.dense(_gru_reference(model.gru, model.item_embedding(real)))
            torch.testing.assert_close(out[row, -len(real):], expected)
        torch.testing.assert_close(model.score(_batch(HISTORIES)),
                                   model.encode(history)[:, -1] @ model.item_embedding.weight.T)


def test_gru4rec_is_causal_and_its_tiled_loss_is_the_prefix_losses():
    """Changing a later item leaves earlier outputs alone; the loss over a tiled window's labels is
    the mean of the last-position losses of its prefixes (what RecBole trains, one per target)."""
    torch.manual_seed(0)
    model = GRU4Rec(N, embedding_size=6, hidden_size=5).eval()
    history = torch.tensor([[0, 0, 4, 8, 1, 3]])
    changed = history.clone()
    changed[0, 4] = 10
    with torch.no_grad():
        torch.testing.assert_close(model.encode(history)[:, :4], model.encode(changed)[:, :4])
        labels = torch.tensor([[0, 0, 8, 1, 0, 5]])  # position 4 is context only
        tiled = model.loss(Batch(history, torch.tensor([5]), torch.tensor([1]), labels=labels))
        prefixes = [(F.pad(history[:, : t + 1], (5 - t, 0)), labels[0, t]) for t in (2, 3, 5)]
        per_prefix = [model.loss(Batch(h, y[None], torch.tensor([1]))) for h, y in prefixes]
        torch.testing.assert_close(tiled, torch.stack(per_prefix).mean())


# ---- NARM ------------------------------------------------------------------------------------


def test_narm_matches_its_equations_over_the_real_items():
    """c_g = h_t; alpha_j = v^T sigmoid(A_1 h_j + A_2 h_t) over the real positions; output
    B [c_l; c_g]; padding changes nothing (even with a non-zero PAD row)."""
    torch.manual_seed(0)
    model = NARM(N, embedding_size=6, hidden_size=5).eval()
    _nonzero_pad_row(model)
    with torch.no_grad():
        out = model.encode(torch.tensor(HISTORIES))
        for row, items in enumerate(torch.tensor(HISTORIES)):
            states = _gru_reference(model.gru, model.item_embedding(items[items != 0]))  # (T, H)
            last = states[-1]
            alpha = model.attention_weight(torch.sigmoid(model.attention_key(states) + model.attention_query(last)))
            local = (alpha * states).sum(0)
            torch.testing.assert_close(out[row], model.decoder(torch.cat([local, last])))
        unpadded = model.encode(torch.tensor([[3, 7, 2]]))
        torch.testing.assert_close(out[0], unpadded[0])


def _narm_prefix_scores(model: NARM, history: Tensor, t: int) -> Tensor:
    """The old ``every`` computation for one target: ``score`` of the window's prefix ending at
    position t, left-padded back to the window's length (a GRU and attention run on it alone)."""
    prefix = F.pad(history[:, : t + 1], (history.shape[1] - 1 - t, 0))
    return model.score(Batch(prefix, torch.ones(len(prefix), dtype=torch.long), torch.ones(len(prefix), dtype=torch.long)))


def test_narm_tiled_training_is_the_per_prefix_computation():
    """One GRU pass over a tiled window gives, at every labelled position t, exactly what running
    NARM on the prefix ending at t gives (global h_t, attention over h_1..h_t with query h_t): the
    output vectors, the scores, and the loss (the mean of the per-prefix losses, each the old
    ``every`` loss of that prefix's window); a changed later item changes no earlier output."""
    torch.manual_seed(0)
    model = NARM(N, embedding_size=6, hidden_size=5).eval()
    _nonzero_pad_row(model)
    with torch.no_grad():  # attention energies spread out, so a wrong mask moves the sums visibly
        model.attention_weight.weight.normal_(0, 1.0)
    history = torch.tensor([[0, 0, 0, 3, 7, 2, 9, 1], [5, 1, 9, 9, 4, 11, 6, 8], [0, 0, 0, 0, 0, 0, 0, 6],
                            [0, 2, 12, 4, 4, 10, 3, 5]])
    labels = torch.tensor([[0, 0, 0, 7, 2, 9, 1, 4], [0, 0, 0, 0, 11, 6, 8, 2],  # older positions: context only
                           [0, 0, 0, 0, 0, 0, 0, 3], [0, 12, 4, 4, 10, 3, 5, 1]])
    batch = Batch(history, labels[:, -1], torch.arange(1, 5), labels=labels)
    valid = labels != 0
    with torch.no_grad():
        hidden = model.encode_at(history, valid)  # (T, d)
        rows, positions = valid.nonzero(as_tuple=True)
        for k, (row, t) in enumerate(zip(rows.tolist(), positions.tolist())):
            prefix = F.pad(history[row: row + 1, : t + 1], (history.shape[1] - 1 - t, 0))
            torch.testing.assert_close(hidden[k], model.encode(prefix)[0])
            torch.testing.assert_close(hidden[k] @ model.item_embedding.weight.T,
                                       _narm_prefix_scores(model, history[row: row + 1], t)[0])
        per_prefix = [model.loss(Batch(F.pad(history[row: row + 1, : t + 1], (history.shape[1] - 1 - t, 0)),
                                       labels[row, t][None], torch.tensor([1])))
                      for row, t in zip(rows.tolist(), positions.tolist())]
        torch.testing.assert_close(model.loss(batch), torch.stack(per_prefix).mean())
        # every position at once, and causality: a later item leaves the earlier outputs alone
        real = history != 0
        changed = history.clone()
        changed[:, 5] = 10
        before = (torch.arange(8) < 5).expand_as(real)[real]  # (T,): the outputs before position 5
        torch.testing.assert_close(model.encode_at(history, real)[before], model.encode_at(changed, real)[before])
        # the last position is what ``score`` (evaluation) uses
        last = torch.zeros_like(valid)
        last[:, -1] = True
        torch.testing.assert_close(model.encode_at(history, last), model.encode(history))


@pytest.mark.parametrize("model_class", [NARM, Caser])
def test_the_last_position_loss_is_the_cross_entropy_of_the_scores(model_class):
    """Without per-position labels (Caser's ``every`` windows; NARM's fallback), the loss is the
    softmax cross-entropy of ``score`` over items 1..N against ``batch.target`` (Caser: without
    its regularisation)."""
    torch.manual_seed(0)
    extra = {"num_users": 3, "max_len": 6, "reg_weight": 0.0} if model_class is Caser else {}
    model = model_class(N, embedding_size=6, **extra).eval()
    batch = _batch(HISTORIES, user=[1, 2, 3])._replace(target=torch.tensor([4, 12, 1]))
    with torch.no_grad():
        expected = F.cross_entropy(model.score(batch)[:, 1:], batch.target - 1)
        torch.testing.assert_close(model.loss(batch), expected)


# ---- Caser -----------------------------------------------------------------------------------


def _caser_reference(model: Caser, items: Tensor, user: int) -> Tensor:
    """Caser's output for one (L,) left-padded window, by explicit sliding windows."""
    e = model.item_embedding(items) * (items != 0)[:, None].float()  # (L, d)
    length = model.max_len
    # each vertical filter: a weighted sum of the L rows, plus its bias
    assert model.vertical.bias is not None and model.user_embedding is not None
    vertical = model.vertical.weight[:, 0, :, 0] @ e + model.vertical.bias[:, None]  # (n_v, d)
    horizontal = []
    for h, module in enumerate(model.horizontal, start=1):
        conv = cast(torch.nn.Conv2d, module)
        windows = torch.stack([e[i: i + h] for i in range(length - h + 1)])  # (L - h + 1, h, d)
        assert conv.bias is not None
        values = torch.einsum("whd,fhd->wf", windows, conv.weight[:, 0]) + conv.bias  # (L - h + 1, n_h)
        horizontal.append(values.relu().max(0).values)
    z = model.features(torch.cat([vertical.flatten(), *horizontal])).relu()
    return model.output(torch.cat([z, model.user_embedding.weight[user]])).relu()


def test_caser_matches_its_sliding_window_equations():
    torch.manual_seed(0)
    model = Caser(N, num_users=4, max_len=6, embedding_size=5, n_h=3, n_v=2).eval()
    _nonzero_pad_row(model)
    with torch.no_grad():
        for layer in model.modules():  # ReLUs that are not all zero or all active
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_(0, 0.1)
        users = [1, 4, 2]
        out = model.encode(torch.tensor(HISTORIES), torch.tensor(users))
        for row, (items, user) in enumerate(zip(torch.tensor(HISTORIES), users)):
            torch.testing.assert_close(out[row], _caser_reference(model, items, user))
        # A window shorter than L is left-padded to L.
        torch.testing.assert_close(model.encode(torch.tensor([[3, 7, 2]]), torch.tensor([1])), out[:1])


def test_caser_is_personal_and_rejects_unknown_users():
    torch.manual_seed(0)
    model = Caser(N, num_users=3, max_len=4, embedding_size=5).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_(0, 0.1)
        scores = model.score(_batch([[1, 2, 3, 4]] * 3, user=[1, 2, 3]))
    assert not torch.allclose(scores[0], scores[1]) and not torch.allclose(scores[1], scores[2])
    with pytest.raises(ValueError, match="outside 1..num_users"):
        model.score(_batch([[1, 2, 3, 4]], user=[4]))
    with pytest.raises(ValueError, match="exceeds Caser's window"):
        model.score(_batch([[1, 2, 3, 4, 5]], user=[1]))


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter", "ignore:No seed found")
def test_caser_reads_num_users_from_the_data_module(tmp_path):
    """Without num_users, setup() sizes the user table from the data module, and the checkpoint
    restores it; a table of the wrong size is refused."""
    from recsys.models.base import RecModule

    cli = recsys.testing.run_cli([
        "fit", "--model=Caser", "--model.max_len=5", "--model.embedding_size=4", "--model.n_h=1", "--model.n_v=1",
        "--data=SeqDataModule", f"--data.path={recsys.testing.tiny_dataset()}", "--data.max_len=5",
        "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", "--test_after_fit=false"])
    users = cli.datamodule.num_users
    assert cli.model.num_users == users and cli.model.user_embedding.num_embeddings == users + 1
    cli.trainer.save_checkpoint(tmp_path / "caser.ckpt")
    restored = RecModule.load_from_checkpoint(tmp_path / "caser.ckpt")
    assert isinstance(restored, Caser) and restored.num_users == users
    wrong = Caser(cli.model.num_items, num_users=users + 1, max_len=5)
    wrong._trainer = cli.trainer
    with pytest.raises(ValueError, match="num_users"):
        wrong.setup("test")
