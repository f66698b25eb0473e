"""recsys-semantic-ids: semantic item IDs (RQ-VAE / RQ-KMeans) and generators over them
(LC-Rec-style instruction LLM, TIGER-style code-only decoder)."""

import recsys

# Names load on first use (PEP 562): the `recsys` entry point imports this package, and
# `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {
    "CodeTable": "recsys_semantic_ids.codes",
    "collision_rate": "recsys_semantic_ids.codes",
    "random_codes": "recsys_semantic_ids.codes",
    "resolve_collisions": "recsys_semantic_ids.codes",
    "RQVAE": "recsys_semantic_ids.tokenizer",
    "ItemDataModule": "recsys_semantic_ids.tokenizer",
}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
