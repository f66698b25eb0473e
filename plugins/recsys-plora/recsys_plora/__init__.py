"""recsys-plora: RecLoRA (Zhu et al., 2024), personalized LoRA for LLM-based CTR prediction."""

import recsys

# Names load on first use (PEP 562): the `recsys` entry point imports this package, and
# `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {
    "DIN": "recsys_plora.crm",
    "GateInput": "recsys_plora.lora",
    "PersonalizedLoRALinear": "recsys_plora.lora",
    "add_personalized_lora": "recsys_plora.lora",
    "RecLoRA": "recsys_plora.model",
}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
