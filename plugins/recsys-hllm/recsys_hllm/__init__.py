"""recsys-hllm: hierarchical LLM recommenders for recsys (HLLM, Lite-LLM4Rec)."""

from recsys_hllm.model import HLLM, LiteLLM4Rec

__all__ = ["HLLM", "LiteLLM4Rec"]
