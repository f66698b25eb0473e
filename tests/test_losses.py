"""The shared next-item losses (recsys.models.losses) against values computed by hand, and
SASRec's ce and bce against a copy of the formulas it used before ItemLoss (same seed)."""

import math

import pytest
import torch
import torch.nn.functional as F

import recsys
from recsys.models.losses import (
    ItemLoss,
    gbce_beta,
    in_batch_log_q,
    sampled_softmax_loss,
)
from recsys.models.sasrec import SASRec


def _table():
    """3 items in D = 2, one target row: scores s_i = hidden . item_i are 1, 2, 3 for hidden (1, 0)."""
    items = torch.tensor([[9.0, 9.0], [1.0, 0.0], [2.0, 1.0], [3.0, -1.0]])  # row 0 = PAD
    hidden = torch.tensor([[1.0, 0.0]])
    return hidden, items


def _log_softmax_at(target: float, others: list[float]) -> float:
    return math.log(math.exp(target) + sum(math.exp(x) for x in others)) - target


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---- ce ------------------------------------------------------------------------------------


def test_ce_is_softmax_over_items_without_pad():
    hidden, items = _table()  # PAD's row would score 9: it must not enter the softmax
    loss = ItemLoss("ce")(hidden, torch.tensor([2]), items)
    assert float(loss) == pytest.approx(_log_softmax_at(2.0, [1.0, 3.0]))


# ---- sampled softmax -------------------------------------------------------------------------


def test_sampled_softmax_by_hand_with_explicit_negatives():
    hidden, items = _table()
    # target 1 (s = 1); negatives 3, 1, 3: the 1 is an accidental hit and leaves the softmax
    losses = sampled_softmax_loss(hidden, torch.tensor([1]), items, torch.tensor([3, 1, 3]))
    assert float(losses[0]) == pytest.approx(_log_softmax_at(1.0, [3.0, 3.0]))
    # with log Q subtracted from every logit (target included)
    log_q_t, log_q_n = torch.tensor([math.log(0.5)]), torch.log(torch.tensor([0.25, 0.5, 0.25]))
    losses = sampled_softmax_loss(hidden, torch.tensor([1]), items, torch.tensor([3, 1, 3]), log_q_t, log_q_n)
    assert float(losses[0]) == pytest.approx(_log_softmax_at(1 - math.log(0.5), [3 - math.log(0.25)] * 2))


def test_sampled_softmax_uniform_replays_its_draws():
    """ItemLoss draws K items uniformly from 1..N (shared by the batch, PAD never), masks hits;
    log Q = -log N is the same for every logit, so the correction changes nothing."""
    torch.manual_seed(0)
    hidden, items = torch.randn(4, 3), torch.randn(6, 3)  # N = 5
    labels = torch.tensor([1, 5, 2, 2])
    for correction in (True, False):
        torch.manual_seed(1)
        loss = ItemLoss("sampled_softmax", num_negatives=7, logq_correction=correction)(hidden, labels, items)
        torch.manual_seed(1)
        negatives = torch.randint(1, 6, (7,)).tolist()
        assert 0 not in negatives
        expected = []
        for t in range(4):
            scores = [float(hidden[t] @ items[i]) for i in range(6)]
            label = int(labels[t])
            expected.append(_log_softmax_at(scores[label], [scores[k] for k in negatives if k != label]))
        assert float(loss) == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_sampled_softmax_over_all_other_items_is_full_ce():
    torch.manual_seed(0)
    hidden, items = torch.randn(6, 4), torch.randn(7, 4)  # N = 6
    labels = torch.tensor([3, 1, 6, 2, 5, 4])  # each item once: in-batch negatives = every item
    full = ItemLoss("ce")(hidden, labels, items)
    for correction in (True, False):  # every Q is 1/6: a constant
        in_batch = ItemLoss("sampled_softmax", num_negatives=100, negative_sampling="in_batch",
                            logq_correction=correction)(hidden, labels, items)
        assert float(in_batch) == pytest.approx(float(full), rel=1e-6)
    # explicit negatives 1..N, labels with repeats
    labels = torch.tensor([3, 3, 6, 1, 1, 1])
    per_row = sampled_softmax_loss(hidden, labels, items, torch.arange(1, 7))
    assert float(per_row.mean()) == pytest.approx(float(ItemLoss("ce")(hidden, labels, items)), rel=1e-6)


def test_in_batch_log_q_is_the_share_of_the_batch():
    assert torch.allclose(in_batch_log_q(torch.tensor([4, 2, 4, 4])), torch.log(torch.tensor([0.75, 0.25, 0.75, 0.75])))


def test_logq_correction_on_a_skewed_in_batch_sample():
    """Targets 1, 1, 1, 2 and equal scores (hidden = 0): every position is a negative (K >= T).

    Without correction: a row with target 1 has one negative (the 2; its own item's copies are
    accidental hits) -> log 2; the row with target 2 has three copies of item 1 -> log 4.
    With it, logits are -log Q: item 1 log(4/3), item 2 log 4: rows with target 1 give
    log(4/3 + 4) - log(4/3) = log 4, the row with target 2 log(4 + 3 * 4/3) - log 4 = log 2.
    """
    labels, items = torch.tensor([1, 1, 1, 2]), torch.randn(3, 2)
    hidden = torch.zeros(4, 2)

    def loss(correction):
        return ItemLoss("sampled_softmax", num_negatives=4, negative_sampling="in_batch",
                        logq_correction=correction)(hidden, labels, items)

    assert float(loss(False)) == pytest.approx((3 * math.log(2) + math.log(4)) / 4)
    assert float(loss(True)) == pytest.approx((3 * math.log(4) + math.log(2)) / 4)

    # The direction: uncorrected in-batch sampling over-penalises the popular item (it is a
    # negative in proportion to its popularity), so it is pulled up less than by the full
    # softmax; the correction pulls it up more. Gradient on the scores of items 1 and 2 with
    # hidden = e_1, items' first coordinate = the score (all 0 here).
    def grad(kind, **kw):
        table = torch.zeros(3, 2, requires_grad=True)
        ItemLoss(kind, **kw)(torch.tensor([[1.0, 0.0]] * 4), labels, table).backward()
        return table.grad[1:, 0] * 4  # d(sum of row losses) / d(s_1, s_2)

    full = grad("ce")  # (3 * -1/2 + 1/2, 3 * 1/2 - 1/2) = (-1, 1)
    plain = grad("sampled_softmax", num_negatives=4, negative_sampling="in_batch", logq_correction=False)
    corrected = grad("sampled_softmax", num_negatives=4, negative_sampling="in_batch", logq_correction=True)
    assert full.tolist() == pytest.approx([-1.0, 1.0])
    assert plain.tolist() == pytest.approx([-0.75, 0.75])
    assert corrected.tolist() == pytest.approx([-1.75, 1.75])


def test_accidental_hits_are_masked():
    """A row whose target equals an in-batch negative: that negative must not enter its softmax."""
    items = torch.tensor([[0.0], [1.0], [5.0]])
    hidden = torch.tensor([[1.0], [1.0]])
    labels = torch.tensor([2, 1])  # scores: item 1 -> 1, item 2 -> 5
    loss = ItemLoss("sampled_softmax", num_negatives=2, negative_sampling="in_batch", logq_correction=False)
    # row 0 (target 2): negatives 2 (hit, masked), 1; row 1 (target 1): negatives 2, 1 (hit)
    expected = (_log_softmax_at(5.0, [1.0]) + _log_softmax_at(1.0, [5.0])) / 2
    assert float(loss(hidden, labels, items)) == pytest.approx(expected)


def test_in_batch_takes_a_subset_of_the_batch_targets():
    torch.manual_seed(0)
    labels = torch.tensor([5, 5, 7, 9, 9, 9, 2, 3])
    hidden, items = torch.randn(8, 3), torch.randn(10, 3)
    torch.manual_seed(3)
    loss = ItemLoss("sampled_softmax", num_negatives=3, negative_sampling="in_batch")(hidden, labels, items)
    torch.manual_seed(3)
    positions = torch.randperm(8)[:3]
    log_q = in_batch_log_q(labels)
    expected = sampled_softmax_loss(hidden, labels, items, labels[positions], log_q, log_q[positions]).mean()
    assert float(loss) == pytest.approx(float(expected))


# ---- bce and gbce ----------------------------------------------------------------------------


def test_bce_by_hand():
    hidden, items = _table()
    torch.manual_seed(5)
    loss = ItemLoss("bce", num_negatives=4)(hidden, torch.tensor([2]), items)
    torch.manual_seed(5)
    draws = torch.randint(1, 3, (1, 4))[0].tolist()  # from the N - 1 = 2 others: 1 -> item 1, 2 -> item 3
    negatives = [1 if d == 1 else 3 for d in draws]
    scores = {1: 1.0, 2: 2.0, 3: 3.0}
    expected = -(math.log(_sigmoid(2.0)) + sum(math.log(_sigmoid(-scores[k])) for k in negatives) / 4)
    assert float(loss) == pytest.approx(expected)


def test_gbce_beta_and_loss_by_hand():
    assert gbce_beta(2, 5, 0.0) == pytest.approx(1.0)
    assert gbce_beta(2, 5, 1.0) == pytest.approx(0.5)  # alpha = 2 / 4
    assert gbce_beta(2, 5, 0.5) == pytest.approx(0.5 * (0.5 * (1 - 2) + 2))  # 0.75
    hidden, items = _table()
    torch.manual_seed(5)
    loss = ItemLoss("gbce", num_negatives=2, gbce_t=0.5)(hidden, torch.tensor([2]), items)
    torch.manual_seed(5)
    draws = torch.randint(1, 3, (1, 2))[0].tolist()
    negatives = [1.0 if d == 1 else 3.0 for d in draws]
    alpha = 2 / 2  # N - 1 = 2 others, 2 negatives: beta = 1 whatever t
    beta = alpha * (0.5 * (1 - 1 / alpha) + 1 / alpha)
    expected = -(beta * math.log(_sigmoid(2.0)) + sum(math.log(1 - _sigmoid(s)) for s in negatives)) / 3
    assert float(loss) == pytest.approx(expected)


def test_gbce_raises_the_positive_probability_to_beta():
    """One target among N = 101 items, K = 4: alpha = 0.04, t = 0.75 -> beta = 0.28; the
    positive term is -log(sigmoid(s)^beta), each negative -log(1 - sigmoid(s)), over K + 1."""
    torch.manual_seed(0)
    hidden, items = torch.randn(1, 3), torch.randn(102, 3)
    labels = torch.tensor([17])
    torch.manual_seed(2)
    loss = ItemLoss("gbce", num_negatives=4, gbce_t=0.75)(hidden, labels, items)
    torch.manual_seed(2)
    draws = torch.randint(1, 101, (1, 4))[0]
    negatives = draws + (draws >= 17).long()
    alpha = 4 / 100
    beta = alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    assert beta == pytest.approx(0.28)
    s_pos = float(hidden[0] @ items[17])
    p = _sigmoid(s_pos) ** beta
    expected = -(math.log(p) + sum(math.log(1 - _sigmoid(float(hidden[0] @ items[k]))) for k in negatives)) / 5
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_gbce_with_t0_is_bce():
    """t = 0 gives beta = 1: the plain binary cross-entropy over the K + 1 logits (the paper's
    weighting), and with K = 1 half of ``bce`` for the same draws."""
    torch.manual_seed(0)
    hidden, items, labels = torch.randn(5, 4), torch.randn(9, 4), torch.tensor([1, 8, 3, 3, 2])
    for k in (1, 3):
        torch.manual_seed(4)
        gbce = ItemLoss("gbce", num_negatives=k, gbce_t=0.0)(hidden, labels, items)
        torch.manual_seed(4)
        bce = ItemLoss("bce", num_negatives=k)(hidden, labels, items)
        torch.manual_seed(4)
        draws = torch.randint(1, 8, (5, k))
        negatives = draws + (draws >= labels[:, None]).long()
        logits = torch.cat([(hidden * items[labels]).sum(-1, keepdim=True),
                            torch.einsum("td,tkd->tk", hidden, items[negatives])], 1)
        target = torch.zeros_like(logits)
        target[:, 0] = 1
        assert float(gbce) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, target)), rel=1e-6)
        if k == 1:
            assert float(gbce) == pytest.approx(float(bce) / 2, rel=1e-6)


def test_sampled_negatives_never_include_pad_or_the_target():
    from recsys.models.losses import sample_other_items

    labels = torch.randint(1, 4, (2000,))
    negatives = sample_other_items(labels, 3, 5)
    assert negatives.min() >= 1 and negatives.max() <= 3
    assert not (negatives == labels[:, None]).any()


# ---- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "softmax"}, "loss_type must be one of"),
        ({"loss_type": "sampled_softmax", "num_negatives": 0}, "num_negatives must be >= 1"),
        ({"loss_type": "bce", "num_negatives": -1}, "num_negatives must be >= 1"),
        ({"loss_type": "sampled_softmax", "negative_sampling": "popular"}, "negative_sampling must be"),
        ({"loss_type": "bce", "negative_sampling": "in_batch"}, "samples its negatives uniformly"),
        ({"loss_type": "gbce", "negative_sampling": "in_batch"}, "samples its negatives uniformly"),
        ({"loss_type": "gbce", "gbce_t": 1.5}, "gbce_t must be in"),
        ({"loss_type": "gbce", "gbce_t": -0.1}, "gbce_t must be in"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ItemLoss(**kwargs)
    with pytest.raises(ValueError, match=message):
        SASRec(num_items=5, max_len=4, d_model=8, ffn_dim=16, **kwargs)


def test_bad_config_for_the_catalog_is_refused():
    hidden, items = _table()  # N = 3
    with pytest.raises(ValueError, match="num_negatives <= N - 1"):
        ItemLoss("gbce", num_negatives=3)(hidden, torch.tensor([1]), items)
    with pytest.raises(ValueError, match="at least 2 items"):
        ItemLoss("bce")(hidden, torch.tensor([1]), items[:2])


# ---- SASRec: ce and bce as before ItemLoss ---------------------------------------------------


def _old_sasrec_loss(model, batch):
    """SASRec.loss as written before ItemLoss (commit 3e1cba9), kept here to compare."""
    hidden = model.encode(batch.history)
    valid = batch.labels != 0
    hidden, labels = hidden[valid], batch.labels[valid]
    if model.loss_type == "ce":
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = hidden.float() @ model.item_embedding.weight.float().T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, labels)
    positive = (hidden * model.item_embedding(labels)).sum(-1)
    sample = torch.randint(1, model.num_items, (len(labels), model.num_negatives))
    negatives = sample + (sample >= labels[:, None]).long()
    negative = torch.einsum("td,tnd->tn", hidden, model.item_embedding(negatives))
    return -(F.logsigmoid(positive).mean() + F.logsigmoid(-negative).mean())


@pytest.mark.parametrize(("loss_type", "k"), [("ce", 1), ("bce", 1), ("bce", 5)])
def test_sasrec_ce_and_bce_are_unchanged(loss_type, k):
    torch.manual_seed(0)
    model = SASRec(num_items=30, max_len=6, d_model=8, num_heads=2, ffn_dim=16, loss_type=loss_type,
                   num_negatives=k).train()  # dropout on: the seed must drive it the same way
    history = torch.randint(1, 31, (4, 6))
    labels = torch.randint(0, 31, (4, 6))
    batch = recsys.Batch(history=history, target=labels[:, -1], user=torch.arange(1, 5), labels=labels)
    torch.manual_seed(7)
    new = model.loss(batch)
    new.backward()
    new_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(7)
    old = _old_sasrec_loss(model, batch)
    old.backward()
    assert float(new.detach()) == float(old.detach())  # bit for bit
    for a, (name, p) in zip(new_grads, model.named_parameters()):
        assert torch.equal(a, p.grad), name


@pytest.mark.parametrize("kwargs", [
    {"loss_type": "sampled_softmax", "num_negatives": 8},
    {"loss_type": "sampled_softmax", "num_negatives": 8, "negative_sampling": "in_batch"},
    {"loss_type": "gbce", "num_negatives": 4, "gbce_t": 0.5},
])
def test_sasrec_trains_with_the_sampled_losses(kwargs):
    torch.manual_seed(0)
    model = SASRec(num_items=30, max_len=6, d_model=8, num_heads=2, ffn_dim=16, **kwargs)
    history = torch.randint(1, 31, (4, 6))
    labels = torch.randint(1, 31, (4, 6))
    batch = recsys.Batch(history=history, target=labels[:, -1], user=torch.arange(1, 5), labels=labels)
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_embedding.weight.grad.abs().sum() > 0
    assert model.hparams.loss_type == kwargs["loss_type"]
