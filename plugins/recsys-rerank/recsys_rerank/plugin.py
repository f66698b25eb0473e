"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads).
RECSYS_API = ">=1.9,<2"  # 1.9: candidate lists, recsys.Reranker and register_rerankers


@recsys.hookimpl
def register_models(register):
    register("recsys_rerank.model.Rerank")


@recsys.hookimpl
def register_rerankers(register):
    register("recsys_rerank.rerankers.RandomReranker")
    register("recsys_rerank.rerankers.PopularityReranker")
    register("recsys_rerank.pointwise.PointwiseLLM")
    register("recsys_rerank.pairwise.PRP")
    register("recsys_rerank.listwise.ListwiseLLM")
    register("recsys_rerank.listwise.FIRST")
    register("recsys_rerank.cross_encoder.CrossEncoder")
