"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads).
RECSYS_API = ">=1.9,<2"  # 1.9: registration by import path (listing imports no torch)


@recsys.hookimpl
def register_models(register):
    register("recsys_semantic_ids.tokenizer.RQVAE")
    register("recsys_semantic_ids.generator.SemanticIDGenerator")
    register("recsys_semantic_ids.generator.TIGER")
