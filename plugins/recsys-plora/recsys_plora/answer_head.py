"""The answer head: P(like) from the backbone's vector at the prompt's answer position.

Causal LMs answer through their LM head, ``logit(Yes) - logit(No)``, which is one fixed linear
map of the last hidden state (B, d) -> (B,): the difference of the two tokens' output rows.
Encoders (or ``head: linear``) get a trainable ``Linear(d, 1)``, started from that Yes-No
direction when the backbone has an LM head (RecLoRA's ``ctr2`` head).

The model keeps the head's tensors itself (``answer_direction``/``answer_bias`` buffers or the
``head`` Linear), so checkpoint keys stay where they always were; this module builds them and
applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class AnswerTokens(NamedTuple):
    """Token ids of the two answers as they follow the prompt."""

    yes: int
    no: int


def answer_token_ids(tokenizer, wrap: Callable[[str], str], chat: bool) -> AnswerTokens:
    """The first token of each answer right after a wrapped prompt.

    Derived from this tokenizer after the assistant prefix (``wrap``) rather than by tokenising
    bare words: the same word tokenises differently after a space or a chat template's prefix.
    ``chat``: the prompt ends with the chat template's assistant prefix (answers carry no space).
    """
    prefix = wrap("Will the user like it?")
    before = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for answer in (("Yes", "No") if chat else (" Yes", " No")):
        full = tokenizer(prefix + answer, add_special_tokens=False)["input_ids"]
        if full[:len(before)] != before or len(full) == len(before):
            raise ValueError(f"the tokenizer merges the answer {answer!r} into the prompt's last token; "
                             "use head: linear")
        ids.append(full[len(before)])
    if ids[0] == ids[1]:
        raise ValueError("the answers Yes and No start with the same token under this tokenizer; use head: linear")
    return AnswerTokens(ids[0], ids[1])


def yes_no_direction(lm_head: nn.Linear, tokens: AnswerTokens) -> tuple[Tensor, float]:
    """-> direction (d,) float32 and bias with ``h @ direction + bias == logit(Yes) - logit(No)``
    for a last hidden state h (d,). Detached copies: the LM head itself stays frozen and shared."""
    direction = (lm_head.weight[tokens.yes] - lm_head.weight[tokens.no]).detach().float().clone()
    bias = getattr(lm_head, "bias", None)
    return direction, (float(bias[tokens.yes] - bias[tokens.no]) if bias is not None else 0.0)


def linear_answer_head(dim: int, direction: Tensor | None) -> nn.Linear:
    """A trainable Linear(d, 1): the Yes-No direction (d,) when given, else N(0, 0.02); zero bias."""
    head = nn.Linear(dim, 1)
    with torch.no_grad():
        if direction is not None:
            head.weight.copy_(direction[None])
        else:
            nn.init.normal_(head.weight, std=0.02)
        head.bias.zero_()
    return head


def yes_no_logits(pooled: Tensor, direction: Tensor, bias: Tensor) -> Tensor:
    """pooled (B, d), direction (d,), bias () -> (B,) ``logit(Yes) - logit(No)``."""
    return pooled @ direction + bias
