"""Evaluation: scores or top-k lists -> one rank per user -> metrics.

Two kinds of metric:

- **rank metrics** (accuracy), a function of the target's rank (1 = best), as in HSTU's
  evaluation: ``fn(ranks: (B,) int64, k: int | None) -> (B,) float``, ``k=None`` meaning no
  cutoff; the logged value is the mean over windows.
- **list metrics** (beyond accuracy: coverage, concentration, novelty), a function of what was
  recommended: ``fn(lists: (n, k) int64 item ids, k: int, context: ListContext) -> () float``,
  over every evaluated window of the epoch at once (they are not means of per-user values).
  Registered with ``register(name, fn, kind="list")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping

import torch
from torch import Tensor

if TYPE_CHECKING:
    from recsys.data.catalog import Catalog  # ListContext.catalog (no import at run time)

MetricFn = Callable[[Tensor, "int | None"], Tensor]
MetricKind = Literal["rank", "list"]


@dataclass(frozen=True)
class ListContext:
    """What a list metric may read besides the lists.

    num_items: N (items are 1..N; 0 in a list means "no item").
    popularity: (N + 1,) float, training interactions per item (the catalog's; PAD row 0).
    num_users: users of the data set (the catalog's; the denominator of an item's popularity share).
    catalog: the items' fields (titles, text) for metrics that read them, e.g. diversity on
        text embeddings; None when the model has no catalog.
    """

    num_items: int
    popularity: Tensor
    num_users: int
    catalog: "Catalog | None" = None


def _exposure(lists: Tensor, num_items: int) -> Tensor:
    """(N + 1,) float: how many lists each item appears in (row 0 counts the empty slots)."""
    return torch.bincount(lists.reshape(-1).long(), minlength=num_items + 1).float()


def coverage(lists: Tensor, k: int, context: ListContext) -> Tensor:
    """Item coverage@k: the share of the catalog's N items that appear in at least one top-k list."""
    return (_exposure(lists[:, :k], context.num_items)[1:] > 0).float().mean()


def gini(lists: Tensor, k: int, context: ListContext) -> Tensor:
    """Gini index@k of item exposure over the catalog: 0 when every item is recommended equally
    often, towards 1 when a few items take every slot (items never recommended count, with 0)."""
    counts = _exposure(lists[:, :k], context.num_items)[1:].sort().values
    n, total = len(counts), counts.sum()
    if n == 0 or total == 0:
        return torch.tensor(0.0)
    index = torch.arange(1, n + 1, dtype=counts.dtype, device=counts.device)
    return ((2 * index - n - 1) * counts).sum() / (n * total)


def novelty(lists: Tensor, k: int, context: ListContext) -> Tensor:
    """Mean self-information@k of the recommended items, -log2 p(i), with p(i) the item's
    training interactions over the number of users of the data set (``context.num_users``;
    capped at 1; an item never seen in training counts as seen once): higher = less popular
    recommendations."""
    top = lists[:, :k]
    listed = top > 0
    if not listed.any():
        return torch.tensor(0.0)
    popularity = context.popularity.to(top.device).float().clamp(min=1.0)
    share = (popularity / max(context.num_users, 1)).clamp(max=1.0)
    return (-torch.log2(share[top[listed]])).mean()

DEFAULT_METRICS = ("hit", "ndcg", "mrr")
DEFAULT_KS = (5, 10, 20, 50)


def mask_seen(scores: Tensor, seen: Tensor | None, target: Tensor | None = None) -> Tensor:
    """Set PAD (column 0) and every ``seen`` item to -inf, in place; the target keeps its score.

    scores: (B, N + 1) float; seen: (B, S) int64 left-padded with 0; target: (B,) int64.
    Keeping the target's score means a repeat interaction can still be hit. PAD stays masked when
    a target is 0 (unknown, predict runs).
    """
    keep = scores.gather(1, target[:, None]) if target is not None else None
    if seen is not None:
        scores.scatter_(1, seen, float("-inf"))
    if keep is not None and target is not None:  # keep is set exactly when target is given
        scores.scatter_(1, target[:, None], keep)
    scores[:, 0] = float("-inf")  # last: a target of 0 must not bring PAD back
    return scores


def keep_candidates(scores: Tensor, candidates: Tensor | None) -> Tensor:
    """Set every item outside its row's candidates to -inf, in place; ``candidates`` None = all
    (:class:`recsys.data.candidates.CandidateLists`).

    scores: (B, N + 1) float; candidates: (B, C) int64 item indices, 0-padded (PAD is never a
    candidate: column 0 stays -inf as :func:`mask_seen` sets it)."""
    if candidates is None:
        return scores
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates, True)
    keep[:, 0] = False
    return scores.masked_fill_(~keep, float("-inf"))


def dense_ranks(scores: Tensor, target: Tensor, ties: str = "pessimistic", user: Tensor | None = None) -> Tensor:
    """Rank of each target among all scores (1 = best).

    scores: (B, N + 1) float with masked entries at -inf; target, user: (B,) int64 -> (B,) int64.

    ``ties="pessimistic"`` (default): rank = #{items scoring >= the target}, so a tie never
    helps the model and a constant (collapsed) scorer ranks every target last.
    ``ties="random"``: the target takes a uniformly drawn place among the items it ties with
    (drawn from a hash of user and target, so evaluation stays deterministic): the expected
    value of random tie-breaking, under which a constant scorer gets hit@k = k/N on average.
    A NaN score never beats the target; a NaN target score ranks last.
    """
    scores = scores.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    target_scores = scores.gather(1, target[:, None])
    better = (scores > target_scores).sum(dim=1)
    tied = (scores == target_scores).sum(dim=1)  # includes the target itself
    if ties == "pessimistic":
        ranks = better + tied
    elif ties == "random":
        salt = target * 7919 + (user if user is not None else torch.arange(len(target), device=target.device)) * 1000003
        ranks = better + 1 + salt % tied.clamp(min=1)
    else:
        raise ValueError(f"ties must be 'pessimistic' or 'random', got {ties!r}")
    diverged = target_scores[:, 0] == float("-inf")  # NaN (or masked) target: last place
    return torch.where(diverged, torch.full_like(ranks, scores.shape[1]), ranks)


def list_ranks(
    ids: Tensor,
    scores: Tensor,
    target: Tensor,
    seen: Tensor | None,
    num_items: int,
    ties: str = "pessimistic",
    user: Tensor | None = None,
    candidates: Tensor | None = None,
) -> Tensor:
    """Rank of each target in a top-k list, by exactly the rules of :func:`dense_ranks`.

    ids: (B, K) int64 item ids in 1..N (0 = no entry); scores: (B, K) float, higher = better;
    target, user: (B,) int64; seen: (B, S) int64 left-padded with 0, or None; candidates: (B, C)
    int64 or None (only those are ranked: :func:`keep_candidates`) -> (B,) int64.

    The list becomes a (B, N + 1) score matrix: a listed item keeps its score's place in its row
    (equal scores stay equal, so they are ties), every other item gets one common floor below all
    listed scores. An entry scored -inf or NaN (a filler) counts as unlisted; an item listed
    twice keeps its best score. The matrix is then masked like a dense model's scores
    (:func:`mask_seen`: PAD and ``seen`` at -inf, the target keeps its score) and ranked by
    :func:`dense_ranks`. So list positions mean nothing, only scores do; items tied with the target
    are resolved by ``ties``; a target that is not listed ties with every unlisted, unmasked item:
    a miss under ``pessimistic``, a uniformly drawn place among them under ``random``.
    """
    b, k = ids.shape
    values = scores.float().nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    listed = (ids > 0) & (ids <= num_items) & (values > float("-inf"))
    # Only the order of the scores matters: replace each by minus the number of listed scores of
    # its row strictly above it (exact small numbers, ties kept), so the floor, -(K + 1), is below
    # every listed entry whatever the scale (even +inf or -1e38 scores).
    above = (values[:, None, :] > values[:, :, None]) & listed[:, None, :]  # (B, K, K): [i, j] = j beats i
    order = -above.sum(dim=2).float()
    floor = -float(k + 1)
    dense = torch.full((b, num_items + 1), floor, dtype=torch.float, device=ids.device)
    columns = torch.where(listed, ids, torch.zeros_like(ids))  # unlisted entries write the floor into PAD
    dense.scatter_reduce_(1, columns, torch.where(listed, order, torch.full_like(order, floor)), "amax")
    return dense_ranks(keep_candidates(mask_seen(dense, seen, target), candidates), target, ties, user)


def topk_ranks(ids: Tensor, target: Tensor) -> Tensor:
    """Rank of each target in a (B, K) list of item ids: position + 1, or K + 1 when absent.

    Repeated ids in a row count once (only the first occurrence matters). Positions only: ties and
    fillers are not seen; models are evaluated by :func:`list_ranks`, which reads the scores.
    """
    k = ids.shape[1]
    hits = ids == target[:, None]
    first = torch.where(hits.any(dim=1), hits.float().argmax(dim=1) + 1, torch.full_like(target, k + 1))
    return first.long()


def hit(ranks: Tensor, k: int | None) -> Tensor:
    """1 if the target is in the top k (hit@k = recall@k with one target)."""
    return (ranks <= k).float() if k is not None else torch.ones_like(ranks, dtype=torch.float)


def ndcg(ranks: Tensor, k: int | None) -> Tensor:
    """1 / log2(rank + 1) within the top k, else 0 (one relevant item, so IDCG = 1)."""
    gain = 1.0 / torch.log2(ranks.float() + 1.0)
    return gain if k is None else torch.where(ranks <= k, gain, torch.zeros_like(gain))


def mrr(ranks: Tensor, k: int | None) -> Tensor:
    """1 / rank within the top k, else 0."""
    rr = 1.0 / ranks.float()
    return rr if k is None else torch.where(ranks <= k, rr, torch.zeros_like(rr))


def parse_metric(spec: str, ks: Iterable[int]) -> list[tuple[str, str, int | None]]:
    """``'ndcg'`` -> one entry per k; ``'ndcg@10'`` -> k = 10; ``'mrr@all'`` -> no cutoff.

    Returns (logged name, metric name, k) triples.
    """
    name, sep, k = spec.partition("@")
    if not sep:
        return [(f"{name}@{kk}", name, kk) for kk in ks]
    if k == "all":
        return [(spec, name, None)]
    if not k.isdigit() or int(k) < 1:
        raise ValueError(f"metric {spec!r}: the cutoff after '@' must be a positive integer or 'all'")
    return [(spec, name, int(k))]


class MetricError(RuntimeError):
    """A metric function raised, or returned something other than one value per rank."""


class MetricSet:
    """The metrics one model logs: resolved once against the registered metric functions.

    ``owners`` maps a metric name to the plugin that registered it, for error messages;
    ``kinds`` to its kind (``rank``, the default, or ``list``)."""

    def __init__(self, specs: Iterable[str], ks: Iterable[int], registered: Mapping[str, Callable],
                 owners: Mapping[str, str] | None = None, kinds: Mapping[str, MetricKind] | None = None):
        self.entries: list[tuple[str, MetricFn, int | None]] = []  #: rank metrics
        self.list_entries: list[tuple[str, Callable, int]] = []  #: list metrics (always with a cutoff)
        self._names: dict[str, str] = {}  # logged name -> "metric 'x' (plugin 'p')"
        for spec in specs:
            for logged, name, k in parse_metric(spec, ks):
                if logged in self._names:  # named twice ("ndcg" and "ndcg@10"): logged once
                    continue
                if name not in registered:
                    raise ValueError(f"unknown metric {name!r} in {spec!r}; registered metrics: {sorted(registered)}")
                owner = (owners or {}).get(name)
                self._names[logged] = f"metric {name!r}" + (f" (plugin {owner!r})" if owner else "")
                if (kinds or {}).get(name, "rank") == "list":
                    if k is None:
                        raise ValueError(f"metric {spec!r}: {name} is computed on top-k lists; give it a cutoff ({name}@10)")
                    self.list_entries.append((logged, registered[name], k))
                else:
                    self.entries.append((logged, registered[name], k))
        cutoffs = [k for _, _, k in self.entries if k is not None]
        self.max_k = max([*cutoffs, *(k for _, _, k in self.list_entries)], default=max(ks))
        #: a metric without cutoff needs every item's rank (dense scores), not a top-k list
        self.has_uncut = len(cutoffs) < len(self.entries)
        #: length of the recommendation lists the list metrics read (0: none asked for)
        self.list_k = max((k for _, _, k in self.list_entries), default=0)

    @property
    def logged(self) -> list[str]:
        """Every logged name (without stage prefix), rank metrics first."""
        return [logged for logged, _, _ in self.entries] + [logged for logged, _, _ in self.list_entries]

    def __call__(self, ranks: Tensor) -> dict[str, Tensor]:
        """(B,) ranks -> {logged name: (B,) values} of the rank metrics; a metric that raises or
        returns another shape is a :class:`MetricError` naming it and its plugin."""
        values = {}
        for logged, fn, k in self.entries:
            value = self._call(logged, fn, ranks, k)
            if not isinstance(value, Tensor) or value.shape != ranks.shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise MetricError(f"{self._names[logged]} returned {got} at {logged}; "
                                  f"expected one value per rank, shape {tuple(ranks.shape)}")
            values[logged] = value
        return values

    def _call(self, logged: str, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``; an exception it raises becomes a :class:`MetricError` naming the metric and its plugin."""
        try:
            return fn(*args)
        except Exception as exc:
            raise MetricError(f"{self._names[logged]} failed at {logged}: {type(exc).__name__}: {exc}") from exc

    def of_lists(self, lists: Tensor, context: ListContext) -> dict[str, Tensor]:
        """(n, list_k) item ids of every evaluated window -> {logged name: () value} of the list metrics."""
        values = {}
        for logged, fn, k in self.list_entries:
            value = torch.as_tensor(self._call(logged, fn, lists, k, context), dtype=torch.float)
            if value.numel() != 1:
                raise MetricError(f"{self._names[logged]} returned shape {tuple(value.shape)} at {logged}; "
                                  "a list metric returns one number for the whole evaluation set")
            values[logged] = value.reshape(())
        return values
