"""HLLM and Lite-LLM4Rec pass the contract every model plugin runs (recsys.testing)."""

from typing import ClassVar

import recsys_hllm.plugin
from recsys_hllm import HLLM, LiteLLM4Rec

import recsys.testing

TINY = {"item_llm": "tiny-bert", "user_heads": 4, "user_intermediate": 64, "max_len": 5, "item_max_length": 16}


class TestHLLM(recsys.testing.ModelContract):
    model = HLLM
    plugin = recsys_hllm.plugin
    init_args: ClassVar[dict] = {**TINY, "num_negatives": 4}
    learn: ClassVar[dict] = {"max_epochs": 40, "init_args": {"lr": 0.005, "num_negatives": 0}}


class TestLiteLLM4Rec(recsys.testing.ModelContract):
    model = LiteLLM4Rec
    plugin = recsys_hllm.plugin
    init_args: ClassVar[dict] = TINY
    learn: ClassVar[dict] = {"max_epochs": 30, "init_args": {"lr": 0.005}}
