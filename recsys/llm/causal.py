"""Causal-LM pieces every generative LLM plugin needs: the ignore index of labels, the model
under a peft wrapper, and the response-only training loss."""

from __future__ import annotations

from typing import Protocol, cast

import torch.nn.functional as F
from torch import Tensor, nn

#: Label of a token that is not learned (prompt, padding): PyTorch's and transformers' default.
IGNORE_INDEX = -100


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (its LoRA layers stay in); any other model as is."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


class _CausalLM(Protocol):
    """What :func:`response_loss` uses of a transformers causal LM."""

    base_model: nn.Module

    def get_output_embeddings(self) -> nn.Module: ...


def response_loss(
    lm: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    position_ids: Tensor | None = None,
) -> Tensor:
    """Causal-LM cross-entropy, the mean over labelled tokens: what ``lm(..., labels=).loss``
    computes, but the vocabulary projection runs only at labelled positions (a response is
    often a tenth of the tokens, and the projection to the vocabulary is the largest matrix of
    a small LM).

    lm: a transformers causal LM, peft-wrapped or not.
    input_ids, attention_mask, labels: (B, T); ``labels`` are the tokens to learn at their own
    positions, :data:`IGNORE_INDEX` elsewhere (position t's output predicts token t + 1).
    position_ids: (B, T) or None (transformers' default: 0..T-1; give them for left padding).
    """
    causal = cast(_CausalLM, unwrap_peft(lm))
    extra = {} if position_ids is None else {"position_ids": position_ids}
    hidden = causal.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logits = causal.get_output_embeddings()(hidden[:, :-1][keep])  # (M, V)
    return F.cross_entropy(logits.float(), target[keep])
