"""The user LLM: a causal transformer over a history of item vectors (``inputs_embeds``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import recsys


def random_llama(hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, max_len: int,
                 attn_implementation: str = "sdpa") -> nn.Module:
    """A randomly initialised Llama decoder whose inputs are vectors (its 2-token vocabulary is unused)."""
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(vocab_size=2, hidden_size=hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         intermediate_size=intermediate_size, max_position_embeddings=max(max_len, 64),
                         pad_token_id=0, bos_token_id=1, eos_token_id=1)
    config._attn_implementation = attn_implementation
    return LlamaModel(config)


class UserLLM(nn.Module):
    """Item vectors (B, L, d_item), left-padded, -> hidden states (B, L, d_item).

    ``decoder``: ``random-llama`` (sized by the arguments) or a backbone name/hub id/directory
    (its pretrained transformer, with linear maps in and out when its width differs).
    Masks: each real position attends to itself and earlier real positions only; position
    ids count real items from 0, so left padding never shifts a history's positions.
    """

    def __init__(self, item_dim: int, decoder: str = "random-llama", num_layers: int = 2, num_heads: int = 6,
                 intermediate_size: int = 1536, max_len: int = 50, attn_implementation: str = "sdpa"):
        super().__init__()
        self.source: dict = {"name": decoder, "kind": "random", "pretrained": False}
        self.decoder: Any  # a transformers base model (no LM head), fed inputs_embeds
        if decoder == "random-llama":
            self.decoder = random_llama(item_dim, num_layers, num_heads, intermediate_size, max_len,
                                        attn_implementation)
        else:
            backbone = recsys.load_backbone(decoder, head="base")
            self.decoder, self.source = backbone.base_model.train(), backbone.source
        width = self.decoder.config.hidden_size
        self.proj_in = nn.Identity() if width == item_dim else nn.Linear(item_dim, width)
        self.proj_out = nn.Identity() if width == item_dim else nn.Linear(width, item_dim)

    def forward(self, item_vectors: Tensor, real: Tensor) -> Tensor:
        """item_vectors: (B, L, d_item); real: (B, L) bool, False at padding -> (B, L, d_item)."""
        mask = real.long()
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        hidden = self.decoder(inputs_embeds=self.proj_in(item_vectors), attention_mask=mask,
                              position_ids=positions).last_hidden_state
        return self.proj_out(hidden)
