"""Beyond-accuracy metrics computed on the recommended lists: coverage, Gini, novelty."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.metrics import ListContext, MetricSet, coverage, gini, novelty
from recsys.plugins import get_metrics


def context(popularity: list[float], users: int) -> ListContext:
    return ListContext(len(popularity) - 1, torch.tensor(popularity), users)


def test_coverage_counts_distinct_listed_items_over_the_catalog():
    lists = torch.tensor([[1, 2], [2, 3]])
    assert coverage(lists, 2, context([0, 1, 1, 1, 1, 1], 3)).item() == pytest.approx(3 / 5)
    assert coverage(lists, 1, context([0, 1, 1, 1, 1, 1], 3)).item() == pytest.approx(2 / 5)  # cutoff first
    assert coverage(torch.tensor([[1, 0]]), 2, context([0, 1, 1], 1)).item() == pytest.approx(1 / 2)  # 0 = no item


def test_gini_by_hand():
    # exposure of items 1..4: 2, 1, 1, 0 -> mean absolute difference 12 / 16 over 2 * mean (1): 0.375
    lists = torch.tensor([[1, 2], [1, 3]])
    assert gini(lists, 2, context([0, 1, 1, 1, 1], 2)).item() == pytest.approx(0.375)
    equal = torch.tensor([[1, 2], [3, 4]])
    assert gini(equal, 2, context([0, 1, 1, 1, 1], 2)).item() == pytest.approx(0.0)
    one = torch.tensor([[1], [1], [1]])  # one item of 3 takes every slot: (n - 1) / n
    assert gini(one, 1, context([0, 1, 1, 1], 3)).item() == pytest.approx(2 / 3)


def test_novelty_is_mean_self_information_of_listed_items():
    ctx = context([0, 4, 2, 1, 0], 4)  # shares 1, 1/2, 1/4; item 4 unseen in training counts once: 1/4
    assert novelty(torch.tensor([[1, 2]]), 2, ctx).item() == pytest.approx(0.5)
    assert novelty(torch.tensor([[3, 4], [2, 0]]), 2, ctx).item() == pytest.approx((2 + 2 + 1) / 3)


def test_list_metrics_are_registered_as_list_kind_and_need_a_cutoff():
    entries = get_metrics()
    assert {entries[n].extra["kind"] for n in ("coverage", "gini", "novelty")} == {"list"}
    assert entries["ndcg"].extra["kind"] == "rank"
    registered = {name: e.obj for name, e in entries.items()}
    kinds = {name: e.extra["kind"] for name, e in entries.items()}
    with pytest.raises(ValueError, match=r"coverage is computed on top-k lists; give it a cutoff"):
        MetricSet(["coverage@all"], [10], registered, kinds=kinds)
    metrics = MetricSet(["ndcg@10", "coverage", "gini@5"], [3, 20], registered, kinds=kinds)
    assert metrics.logged == ["ndcg@10", "coverage@3", "coverage@20", "gini@5"] and metrics.list_k == 20


def test_a_run_logs_list_metrics_of_the_lists_it_recommended(tiny_path, tmp_path):
    """Pop without history masking shows every user the same list: coverage@k is exactly k/N,
    Gini follows from k items taking every slot, novelty from those items' popularity."""
    from recsys.testing import run_cli

    cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}", "--data.mask_history=false",
                   "--model.metrics=[ndcg@3, coverage@3, gini@3, novelty@3]", "--monitor=val/ndcg@3", "--trainer.max_epochs=1",
                   f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    logged = cli.trainer.callback_metrics
    n = cli.model.num_items
    assert logged["test/coverage@3"].item() == pytest.approx(3 / n)
    assert logged["test/gini@3"].item() == pytest.approx((n - 3) / n)  # 3 equal items, n - 3 zeros
    popularity = torch.as_tensor(cli.datamodule.catalog.popularity, dtype=torch.float)
    top = popularity[1:].topk(3).indices + 1
    share = (popularity[top].clamp(min=1) / cli.datamodule.num_users).clamp(max=1)
    assert logged["test/novelty@3"].item() == pytest.approx(float((-torch.log2(share)).mean()), rel=1e-5)
    assert not math.isnan(logged["test/ndcg@3"].item())


class FixedVectors:
    """Stands in for a text backbone: items 1 and 3 point the same way, item 2 orthogonally."""

    def __init__(self):
        from recsys.llm import IntraListDiversity

        class Fixed(IntraListDiversity):
            def item_vectors(self, catalog):
                return torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])

        self.metric = Fixed("unused")


def test_intra_list_diversity_by_hand():
    ild = FixedVectors().metric
    ctx = ListContext(3, torch.ones(4), 3, catalog=object())
    # [1, 2, 3]: distances 1 (1-2), 0 (1-3), 1 (2-3) -> 2/3; [1, 2, 0]: 1; [1, 0, 0]: no pair, left out
    lists = torch.tensor([[1, 2, 3], [1, 2, 0], [1, 0, 0]])
    assert ild(lists, 3, ctx).item() == pytest.approx((2 / 3 + 1) / 2)
    assert ild(lists, 2, ctx).item() == pytest.approx(1.0)  # cutoff first: [1, 2], [1, 2]
    with pytest.raises(ValueError, match="reads the items' text"):
        ild(lists, 3, ListContext(3, torch.ones(4), 3))


def test_a_run_logs_diversity_on_the_text_embeddings_of_what_it_recommended(tiny_path, tmp_path):
    import recsys
    from recsys.llm import IntraListDiversity
    from recsys.plugins import pm, register_plugin
    from recsys.testing import run_cli

    ild = IntraListDiversity("tiny-bert")  # a small random text model: offline and fast

    class TinyDiversity:
        @recsys.hookimpl
        def register_metrics(self, register):
            register("ild_tiny", ild, kind="list")

    register_plugin(TinyDiversity(), "tiny-diversity")
    try:
        cli = run_cli(["fit", "--model=Pop", "--data=SeqDataModule", f"--data.path={tiny_path}",
                       "--data.mask_history=false", "--model.metrics=[ndcg@3, ild_tiny@3]", "--monitor=val/ndcg@3",
                       "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
                       "--trainer.enable_progress_bar=false"])
    finally:
        pm.unregister(name="tiny-diversity")
    popularity = torch.as_tensor(cli.datamodule.catalog.popularity, dtype=torch.float)
    top = (popularity[1:].topk(3).indices + 1).tolist()  # every user's list (no masking)
    v = ild.item_vectors(cli.datamodule.catalog)[top]
    expected = sum(1 - float(v[i] @ v[j]) for i in range(3) for j in range(3) if i != j) / 6
    assert cli.trainer.callback_metrics["test/ild_tiny@3"].item() == pytest.approx(expected, abs=1e-5)
    assert 0 < expected  # random text vectors are not all parallel: the check can fail


def test_the_list_context_reads_the_number_of_users_from_the_catalog(tiny_path):
    """Without a Trainer (a notebook: set_catalog by hand) novelty's denominator is still the
    data's users, not a guess; a catalog that does not know it is a clear error."""
    from recsys.data.catalog import Catalog
    from recsys.data.datamodule import SeqDataModule
    from recsys.models.pop import Pop

    data = SeqDataModule(path=str(tiny_path))
    data.setup("fit")
    catalog = data.catalog
    assert catalog.num_users == data.num_users > 0
    model = Pop(num_items=data.num_items)
    model.set_catalog(catalog)
    context = model._list_context()
    assert context.num_users == data.num_users
    assert context.num_users != int(context.popularity.sum())  # the old fallback: interactions, not users
    model.set_catalog(Catalog(catalog.dataset, catalog.vocab, catalog.fields, catalog.popularity))
    with pytest.raises(RuntimeError, match=r"does not say how many users .*num_users="):
        model._list_context()
