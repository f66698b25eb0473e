"""recsys-hllm: hierarchical LLM recommenders for recsys (HLLM, Lite-LLM4Rec)."""

import recsys

# Names load on first use (PEP 562): the `recsys` entry point imports this package, and
# `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {
    "HLLM": "recsys_hllm.model",
    "LiteLLM4Rec": "recsys_hllm.model",
}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
