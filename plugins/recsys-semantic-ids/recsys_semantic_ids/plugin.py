"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads).
RECSYS_API = ">=1.8,<2"  # 1.8: recsys.atomic_path


@recsys.hookimpl
def register_models(register):
    from recsys_semantic_ids.generator import TIGER, SemanticIDGenerator
    from recsys_semantic_ids.tokenizer import RQVAE

    register(RQVAE)
    register(SemanticIDGenerator)
    register(TIGER)
