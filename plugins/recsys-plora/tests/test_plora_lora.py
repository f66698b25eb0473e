"""The personalized LoRA bank: exact at initialisation, per-sample mixing, the two mixings."""

import pytest
import torch
from recsys_plora.lora import GateInput, PersonalizedLoRALinear, add_personalized_lora
from torch import nn


def _layer(mixing="products", k=3, d_in=6, d_out=5, h=4, seed=0):
    torch.manual_seed(seed)
    gate = GateInput()
    return PersonalizedLoRALinear(nn.Linear(d_in, d_out), gate, h, num_loras=k, rank=2, alpha=4,
                                  gate_hidden=7, gate_dropout=0.0, mixing=mixing), gate


def _naive(layer: PersonalizedLoRALinear, x, h):
    """Per-sample weights, materialised (what the efficient path must equal)."""
    a = layer.weights(h)  # (B, K)
    out = []
    for b in range(x.shape[0]):
        if layer.mixing == "products":
            delta_w = sum(a[b, k] * layer.lora_A[k] @ layer.lora_B[k] for k in range(layer.num_loras))
        else:
            a_u = sum(a[b, k] * layer.lora_A[k] for k in range(layer.num_loras))
            b_u = sum(a[b, k] * layer.lora_B[k] for k in range(layer.num_loras))
            delta_w = a_u @ b_u
        out.append(layer.base(x[b]) + layer.scaling * x[b] @ delta_w)
    return torch.stack(out)


@pytest.mark.parametrize("mixing", ["products", "code"])
def test_fresh_wrap_equals_the_base_layer_exactly(mixing):
    layer, gate = _layer(mixing)
    x, gate.value = torch.randn(2, 3, 6), torch.randn(2, 4)
    assert torch.equal(layer(x), layer.base(x))


def test_fresh_wrap_leaves_a_whole_backbone_unchanged():
    from recsys import load_backbone

    bb = load_backbone("tiny-llama")
    ids = torch.randint(5, 1000, (2, 7))
    before = bb.model(input_ids=ids).logits
    gate = GateInput()
    names = [n for n, m in bb.model.named_modules() if n.endswith(("q_proj", "v_proj"))]
    add_personalized_lora(bb.model, names, gate, gate_dim=4, num_loras=2, rank=4)
    assert sum(isinstance(m, PersonalizedLoRALinear) for m in bb.model.modules()) == len(names) == 4
    gate.value = torch.randn(2, 4)
    assert torch.equal(bb.model(input_ids=ids).logits, before)
    gate.value = None
    with pytest.raises(RuntimeError, match="gate input"):
        bb.model(input_ids=ids)


@pytest.mark.parametrize("mixing", ["products", "code"])
def test_efficient_path_equals_materialised_per_sample_weights(mixing):
    layer, gate = _layer(mixing)
    with torch.no_grad():
        layer.lora_B.normal_()
    x, h = torch.randn(3, 4, 6), torch.randn(3, 4)
    gate.value = h
    torch.testing.assert_close(layer(x), _naive(layer, x, h), rtol=1e-5, atol=1e-5)


def test_one_hot_gate_with_products_is_exactly_that_bank_members_lora():
    layer, gate = _layer("products", k=3)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.gate[-1].weight.zero_()
        layer.gate[-1].bias.copy_(torch.tensor([0.0, 60.0, 0.0]))  # softmax -> member 1
    x = torch.randn(2, 6)
    gate.value = torch.randn(2, 4)
    expected = layer.base(x) + layer.scaling * (x @ layer.lora_A[1]) @ layer.lora_B[1]
    torch.testing.assert_close(layer(x), expected)


def test_gate_mixes_per_sample_and_gradients_reach_a_b_and_gate():
    layer, gate = _layer("products", k=4)
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(1, 3, 6).expand(2, 3, 6)  # the same input for two users ...
    h = torch.stack([torch.ones(4), -torch.ones(4) * torch.tensor([1.0, 3.0, -2.0, 0.5])])  # ... who differ
    gate.value = h
    out = layer(x)
    assert torch.equal(out[0], out[1])  # B = 0: no personalisation yet
    out.pow(2).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0
    assert not layer.base.weight.requires_grad and layer.base.weight.grad is None
    opt.step()
    opt.zero_grad()
    out = layer(x)
    assert not torch.allclose(out[0], out[1])  # different users, different outputs
    out.pow(2).sum().backward()
    for name in ("lora_A", "lora_B"):
        assert getattr(layer, name).grad.abs().sum() > 0, name
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.gate.parameters())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="mixing"):
        _layer("both")
    with pytest.raises(TypeError, match="not an nn.Linear"):
        add_personalized_lora(nn.Sequential(nn.ReLU()), ["0"], GateInput(), 4)
