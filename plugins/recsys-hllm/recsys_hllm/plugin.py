"""The plugin module named by the ``recsys`` entry point."""

import recsys


@recsys.hookimpl
def register_models(register):
    from recsys_hllm.model import HLLM, LiteLLM4Rec

    register(HLLM)
    register(LiteLLM4Rec)
