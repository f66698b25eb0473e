"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads).
RECSYS_API = ">=1.2,<2"


@recsys.hookimpl
def register_models(register):
    from recsys_hllm.model import HLLM, LiteLLM4Rec

    register(HLLM)
    register(LiteLLM4Rec)
