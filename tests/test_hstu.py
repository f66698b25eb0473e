"""HSTU: the model contract, and the properties of its pointwise causal attention."""

from typing import ClassVar

import torch
import torch.nn.functional as F

import recsys.testing
from recsys.data.batch import Batch
from recsys.models.hstu import HSTU, HSTUBlock, RelativePositionBias




class TestHSTU(recsys.testing.ModelContract):
    model = HSTU
    init_args: ClassVar[dict] = {"max_len": 5, "d_model": 8, "num_heads": 2}
    learn: ClassVar[dict] = {"max_epochs": 20, "init_args": {"lr": 0.02}}


def _model(**kwargs) -> HSTU:
    torch.manual_seed(0)
    model = HSTU(num_items=20, **{"max_len": 8, "d_model": 8, "num_heads": 2, **kwargs})
    with torch.no_grad():  # a bias visibly away from 0, so a wrongly included key shows
        for block in model.blocks:
            assert isinstance(block, HSTUBlock) and block.bias is not None
            block.bias.weight.normal_(0.0, 1.0)
    return model.eval()


def test_relative_position_bias_by_hand():
    bias = RelativePositionBias(max_len=4)
    with torch.no_grad():
        bias.weight.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))  # w[i - j]
    expected = torch.tensor([[10.0, 0.0, 0.0],
                             [20.0, 10.0, 0.0],
                             [30.0, 20.0, 10.0]])  # above the diagonal: masked pairs, 0
    assert torch.equal(bias(3), expected)
    assert bias(4)[3, 0] == 40.0  # the longest offset uses the last weight


def test_block_matches_the_formula_written_as_loops():
    """One block against the definition: A_ij = SiLU(q_i.k_j + w[i-j]) / max_len over the real
    keys j <= i, out = x + W_o(LN(A V) * U) (no softmax, no 1/sqrt(d))."""
    torch.manual_seed(0)
    d, heads, max_len = 6, 2, 5
    block = HSTUBlock(d, heads, attention_dim=3, linear_dim=2, dropout=0.0, max_len=max_len, relative_bias=True,
                      eps=1e-6).eval()
    assert block.bias is not None
    with torch.no_grad():
        block.bias.weight.normal_(0.0, 1.0)
        block.uvqk.normal_(0.0, 0.5)
    x = torch.randn(1, 4, d)
    real = torch.tensor([[False, True, True, True]])
    allowed = torch.ones(4, 4, dtype=torch.bool).tril() & real[:, None, :]
    u, v, q, k = F.silu(F.layer_norm(x, (d,), eps=1e-6) @ block.uvqk).split([4, 4, 6, 6], dim=-1)
    w = block.bias.weight
    expected = torch.zeros(1, 4, d)
    for i in range(4):
        heads_out = []
        for h in range(heads):
            acc = torch.zeros(2)
            for j in range(4):
                if j <= i and real[0, j]:
                    logit = q[0, i, 3 * h:3 * h + 3] @ k[0, j, 3 * h:3 * h + 3] + w[i - j]
                    acc = acc + F.silu(logit) / max_len * v[0, j, 2 * h:2 * h + 2]
            heads_out.append(acc)
        attended = torch.cat(heads_out)
        expected[0, i] = x[0, i] + block.out(F.layer_norm(attended, (4,), eps=1e-6) * u[0, i])
    got = block(x, allowed)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(block(x, allowed, last_only=True), expected[:, -1:], atol=1e-5)


@torch.no_grad()
def test_causal_a_later_item_leaves_earlier_positions_unchanged():
    model = _model()
    history = torch.tensor([[0, 0, 3, 7, 1, 9, 4, 5]])
    changed = history.clone()
    changed[0, 5] = 12  # position 5 gets another item
    before, after = model.encode(history), model.encode(changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)  # the past does not see it
    assert not torch.allclose(before[:, 5:], after[:, 5:], atol=1e-4)  # position 5 onwards does


@torch.no_grad()
def test_left_padding_does_not_change_the_score():
    model = _model()
    items = [3, 7, 1, 9]
    scores = []
    for pad in (0, 2, 4):
        history = torch.tensor([[0] * pad + items])
        batch = Batch(history=history, target=torch.zeros(1, dtype=torch.long), user=torch.ones(1, dtype=torch.long))
        scores.append(model.score(batch))
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
    assert torch.allclose(scores[0], scores[2], atol=1e-5)
    # and the score depends on the history (the test above is not vacuous)
    other = Batch(history=torch.tensor([[0, 0, 3, 7, 1, 8]]), target=torch.zeros(1, dtype=torch.long),
                  user=torch.ones(1, dtype=torch.long))
    assert not torch.allclose(scores[1], model.score(other), atol=1e-4)


@torch.no_grad()
def test_cosine_scores_are_bounded_by_the_temperature():
    model = _model(l2_norm=True, temperature=0.1)
    batch = Batch(history=torch.tensor([[0, 3, 7, 1]]), target=torch.zeros(1, dtype=torch.long),
                  user=torch.ones(1, dtype=torch.long))
    scores = model.score(batch)[:, 1:]
    assert scores.abs().max() <= 10.0 + 1e-4
