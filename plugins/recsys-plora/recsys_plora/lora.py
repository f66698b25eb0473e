"""Personalized LoRA: a bank of K low-rank adapters per linear layer, mixed per sample by a gate.

peft cannot mix adapters per sample, so this is a small module of its own that wraps an
``nn.Linear`` in place. For input x (B, ..., d_in) and gate weights a (B, K) computed from a
per-sample vector h (the CRM's user representation)::

    a     = softmax(MLP(LayerNorm(h)) / temperature)              (B, K)
    delta = scaling * sum_k a_k * (dropout(x) @ A_k) @ B_k         "products" (default)
    delta = scaling * (sum_k a_k dropout(x) @ A_k) @ (sum_k a_k B_k)   "code"
    y     = base(x) + delta

``products`` is the paper's mixture (A_u B_u^T = sum_k a_k A_k B_k^T): linear in the gate,
so a one-hot gate gives exactly bank member k, a plain LoRA. ``code`` is what the public
RecLoRA code computes (A and B mixed separately), which adds cross terms a_i a_j A_i B_j that
couple bank members; it is kept as an option for fidelity. Both cost one (B, T, K*r) product:
x is projected by every A_k at once and mixed, never materialising a per-sample d_in x d_out
weight. B starts at zero, so a fresh wrap computes exactly what the base layer does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Mixing = Literal["products", "code"]


class GateInput:
    """Holds the per-sample gate input (B, H) every wrapped layer of one model reads.

    The model sets ``value`` before the backbone's forward and clears it after; a wrapped layer
    called without it raises, rather than silently running unpersonalised.
    """

    def __init__(self):
        self.value: Tensor | None = None


class PersonalizedLoRALinear(nn.Module):
    """``base(x) + scaling * delta(x, gate(h))`` with a bank of K (A, B) pairs (module docstring).

    A_k: (d_in, r) kaiming-uniform (as peft's A), B_k: (r, d_out) zero; the base layer is frozen.
    """

    def __init__(
        self,
        base: nn.Linear,
        gate_input: GateInput,
        gate_dim: int,
        num_loras: int = 8,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        temperature: float = 1.0,
        gate_hidden: int = 60,
        gate_dropout: float = 0.1,
        mixing: Mixing = "products",
    ):
        super().__init__()
        if num_loras < 1 or rank < 1:
            raise ValueError(f"num_loras and rank must be >= 1, got {num_loras} and {rank}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if mixing not in ("products", "code"):
            raise ValueError(f"mixing must be 'products' or 'code', got {mixing!r}")
        self.base = base.requires_grad_(False)
        self.gate_input = gate_input
        self.num_loras, self.rank, self.scaling = num_loras, rank, alpha / rank
        self.temperature, self.mixing = temperature, mixing
        d_in, d_out = base.in_features, base.out_features
        a = torch.empty(num_loras, rank, d_in)
        for k in range(num_loras):
            nn.init.kaiming_uniform_(a[k], a=math.sqrt(5))  # as nn.Linear(d_in, r) / peft's lora_A
        self.lora_A = nn.Parameter(a.transpose(1, 2).contiguous())  # (K, d_in, r)
        self.lora_B = nn.Parameter(torch.zeros(num_loras, rank, d_out))  # (K, r, d_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.gate = nn.Sequential(nn.LayerNorm(gate_dim), nn.Linear(gate_dim, gate_hidden), nn.ReLU(),
                                  nn.Dropout(gate_dropout), nn.Linear(gate_hidden, num_loras))

    def weights(self, h: Tensor) -> Tensor:
        """(B, H) -> (B, K) mixing weights (softmax with temperature)."""
        return torch.softmax(self.gate(h.to(self.lora_A.dtype)) / self.temperature, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, ..., d_in) -> (B, ..., d_out)."""
        y = self.base(x)
        h = self.gate_input.value
        if h is None:
            raise RuntimeError("PersonalizedLoRALinear called without a gate input: set GateInput.value (B, H) first")
        if h.shape[0] != x.shape[0]:
            raise ValueError(f"gate input has {h.shape[0]} rows but the layer input has {x.shape[0]}")
        a = self.weights(h)  # (B, K)
        a = a.reshape(a.shape[0], *([1] * (x.dim() - 2)), self.num_loras, 1)  # (B, 1.., K, 1)
        xa = torch.einsum("...d,kdr->...kr", self.dropout(x).to(self.lora_A.dtype), self.lora_A)  # (B, .., K, r)
        if self.mixing == "products":
            delta = (xa * a).flatten(-2) @ self.lora_B.flatten(0, 1)  # (B, .., K*r) @ (K*r, d_out)
        else:
            b_u = torch.einsum("bk,kro->bro", a.reshape(a.shape[0], -1), self.lora_B)  # (B, r, d_out): small
            mixed = (xa * a).sum(-2)  # (B, .., r)
            delta = torch.einsum("b...r,bro->b...o", mixed, b_u)
        return y + (self.scaling * delta).to(y.dtype)


def add_personalized_lora(
    model: nn.Module,
    module_names: Sequence[str],
    gate_input: GateInput,
    gate_dim: int,
    **kwargs,
) -> list[str]:
    """Replace each named ``nn.Linear`` of ``model`` with a :class:`PersonalizedLoRALinear`
    reading ``gate_input``; returns the names wrapped. ``kwargs`` go to the wrapper."""
    modules = dict(model.named_modules())
    for name in module_names:
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise TypeError(f"cannot add a personalized LoRA to {name!r}: it is "
                             f"{'missing' if module is None else type(module).__name__}, not an nn.Linear")
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, PersonalizedLoRALinear(module, gate_input, gate_dim, **kwargs))
    return list(module_names)
