"""Built-in metrics: accuracy from the target's rank; coverage, concentration and novelty from the lists."""

from recsys.hookspecs import hookimpl


@hookimpl
def register_metrics(register):
    register("hit", "recsys.metrics.hit")
    register("recall", "recsys.metrics.hit")  # one target per user: recall@k == hit@k
    register("ndcg", "recsys.metrics.ndcg")
    register("mrr", "recsys.metrics.mrr")
    register("coverage", "recsys.metrics.coverage", kind="list")
    register("gini", "recsys.metrics.gini", kind="list")
    register("novelty", "recsys.metrics.novelty", kind="list")
    register("ild", "recsys.llm.diversity.ild", kind="list")
