"""Built-in ranking metrics."""

from recsys import metrics
from recsys.hookspecs import hookimpl


@hookimpl
def register_metrics(register):
    register("hit", metrics.hit)
    register("recall", metrics.hit)  # one target per user: recall@k == hit@k
    register("ndcg", metrics.ndcg)
    register("mrr", metrics.mrr)
