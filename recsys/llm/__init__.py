"""LLM building blocks shared by every LLM plugin: backbones, item text templates, text
encoders with an embedding cache, LoRA helpers, the causal-LM response loss.

Public API (``__all__``, versioned with ``recsys.API_VERSION``): plugins import these names from
``recsys.llm``, never from its submodules. transformers and peft are imported on first use, so
ID-only models never pay for them."""

from __future__ import annotations

from recsys.lazy import lazy_exports

_EXPORTS = {
    "Backbone": "recsys.llm.backbones",
    "BackboneUnavailable": "recsys.llm.backbones",
    "load_backbone": "recsys.llm.backbones",
    "resolve_backbone": "recsys.llm.backbones",
    "IGNORE_INDEX": "recsys.llm.causal",
    "response_loss": "recsys.llm.causal",
    "unwrap_peft": "recsys.llm.causal",
    "EmbeddingCache": "recsys.llm.cache",
    "cache_dir": "recsys.llm.cache",
    "TextEncoder": "recsys.llm.encoder",
    "embed_texts": "recsys.llm.encoder",
    "IntraListDiversity": "recsys.llm.diversity",
    "eval_mode": "recsys.llm.encoder",
    "freeze_except_top": "recsys.llm.encoder",
    "transformer_layers": "recsys.llm.encoder",
    "LORA_TARGETS": "recsys.llm.lora",
    "TrainableOnlyCheckpoint": "recsys.llm.lora",
    "add_lora": "recsys.llm.lora",
    "lora_targets": "recsys.llm.lora",
    "merge_lora": "recsys.llm.lora",
    "item_fields": "recsys.llm.templates",
    "render_item_text": "recsys.llm.templates",
    "render_items": "recsys.llm.templates",
    "get_template": "recsys.llm.templates",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
