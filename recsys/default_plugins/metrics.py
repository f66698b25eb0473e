"""Built-in metrics: accuracy from the target's rank; coverage, concentration and novelty from the lists."""

from recsys import metrics
from recsys.hookspecs import hookimpl
from recsys.llm.diversity import IntraListDiversity


@hookimpl
def register_metrics(register):
    register("hit", metrics.hit)
    register("recall", metrics.hit)  # one target per user: recall@k == hit@k
    register("ndcg", metrics.ndcg)
    register("mrr", metrics.mrr)
    register("coverage", metrics.coverage, kind="list")
    register("gini", metrics.gini, kind="list")
    register("novelty", metrics.novelty, kind="list")
    register("ild", IntraListDiversity("all-minilm-l6-v2"), kind="list")
