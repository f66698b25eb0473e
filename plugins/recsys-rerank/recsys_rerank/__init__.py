"""recsys-rerank: retrieve-then-rerank and rerankers for recsys."""

import recsys

# Names load on first use (PEP 562): `recsys plugins` / `recsys models` list this package
# without importing torch.
_EXPORTS = {"Rerank": "recsys_rerank.model", "RandomReranker": "recsys_rerank.rerankers",
            "PopularityReranker": "recsys_rerank.rerankers", "PointwiseLLM": "recsys_rerank.pointwise",
            "PRP": "recsys_rerank.pairwise", "ListwiseLLM": "recsys_rerank.listwise", "FIRST": "recsys_rerank.listwise",
            "CrossEncoder": "recsys_rerank.cross_encoder"}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
