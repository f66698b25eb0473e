"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads).
RECSYS_API = ">=1.4,<2"


@recsys.hookimpl
def register_models(register):
    from recsys_grounding.model import BIGRec

    register(BIGRec)


@recsys.hookimpl
def register_grounders(register):
    from recsys_grounding.grounders import EmbeddingGrounder

    register(EmbeddingGrounder)
