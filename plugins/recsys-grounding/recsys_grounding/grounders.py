"""The embedding grounder: generated text -> distances to every catalog title -> ranked items.

BIGRec's step 2: embed the generated title and every catalog title with one text encoder
(BIGRec: the base LLM's last-layer state of the last token; or a sentence encoder such as
MiniLM), and rank items by L2 distance (faiss, through :class:`recsys.ItemIndex`). Before
that, the core's exact-title grounder is a first pass: items whose title equals the output
(normalised) rank before every other item, tied with each other when titles repeat. Distances
can be reweighted by popularity or a collaborative model's scores (:mod:`recsys_grounding.reweighting`).

Equal distances give equal scores: ties are left to the engine's tie policy (``model.ties``),
never broken by item id.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal, Sequence

import torch
from torch import Tensor

import recsys
import recsys.llm
from recsys_grounding.reweighting import reweight
from recsys_grounding.titles import clean_output


class EmbeddingGrounder(recsys.Grounder):
    """Ground outputs to the catalog items nearest in an embedding space.

    Args:
        encoder: a :class:`recsys.TextEncoder`, or a backbone name/hub id/directory to build a
            frozen one from (``pooling``, ``max_length``).
        metric: ``l2`` (BIGRec: Euclidean distance) or ``ip`` (distance = minus inner product).
        exact_first: put items whose title equals the output first (the core's exact-title
            grounder): at the minimum distance of the row in :meth:`distances`, strictly before
            every other item in :meth:`rank` (given ``first``).
        template: item template for catalog titles (``title``: "Toy Story (1995)"; quotes are
            stripped from both sides as BIGRec does).
        threshold: an output *grounds* when its nearest item is within ``threshold`` times the
            catalog's median nearest-neighbour distance (the distance at which two different
            real titles typically sit); see :meth:`grounded`.
        batch_size: texts per encoder batch.
    """

    def __init__(
        self,
        encoder: "recsys.TextEncoder | str" = "all-minilm-l6-v2",
        pooling: Literal["mean", "cls", "last"] = "mean",
        max_length: int = 64,
        metric: Literal["l2", "ip"] = "l2",
        exact_first: bool = True,
        template: str = "title",
        threshold: float = 1.0,
        batch_size: int = 64,
    ):
        if metric not in ("l2", "ip"):
            raise ValueError(f"grounder metric must be 'l2' or 'ip', got {metric!r}")
        if isinstance(encoder, str):
            encoder = recsys.TextEncoder(encoder, pooling=pooling, max_length=max_length, trainable_layers=0)
        self.encoder, self.metric, self.exact_first = encoder, metric, exact_first
        self.template, self.threshold, self.batch_size = template, threshold, batch_size

    # ---- fitting ------------------------------------------------------------------------

    def fit(self, catalog: "recsys.Catalog") -> "EmbeddingGrounder":
        """Embed every catalog title (cached on disk for frozen pretrained encoders) and index them."""
        super().fit(catalog)
        texts = [clean_output(t) for t in recsys.llm.render_items(catalog, self.template)]
        self.titles = texts  # (N + 1,), [0] = ''
        vectors = self.encoder.encode(texts[1:], batch_size=self.batch_size)
        self.index = recsys.ItemIndex(vectors, metric=self.metric)
        # The core's exact-title grounder, over the same rendered titles ("Title (Year)").
        self.exact = recsys.ExactTitleGrounder().fit(SimpleNamespace(titles=texts))
        self.reference_distance = self._median_neighbour_distance(vectors)
        return self

    def _median_neighbour_distance(self, vectors: Tensor) -> float:
        """Median over items of the distance to the nearest item with a different title (the scale of
        "close" in this embedding space)."""
        k = min(len(self.index), 8)
        scores, ids = self.index.search(vectors, k)
        dist = self._to_distance(scores)
        keys = [self.exact_key(t) for t in self.titles]
        nearest = []
        for row in range(len(vectors)):
            own = keys[row + 1]
            others = [float(d) for d, i in zip(dist[row], ids[row]) if i > 0 and keys[int(i)] != own]
            if others:
                nearest.append(min(others))
        return float(torch.tensor(nearest).median()) if nearest else 1.0

    @staticmethod
    def exact_key(text: str) -> str:
        from recsys_grounding.titles import title_key

        return title_key(text)

    def _to_distance(self, scores: Tensor) -> Tensor:
        # ItemIndex scores are "higher is better": -||q - e||^2 for l2, q.e for ip.
        if self.metric == "l2":
            return (-scores).clamp_min(0).sqrt()
        return -scores

    # ---- grounding ----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "index"):
            raise RuntimeError("call fit(catalog) before grounding")

    @torch.no_grad()
    def distances(self, outputs: Sequence[str]) -> Tensor:
        """(B,) generated texts -> (B, N + 1) distances to every item (column 0 = PAD = +inf).

        Exact title matches are set to the row's minimum distance when ``exact_first``.
        """
        self._check_fitted()
        outputs = [clean_output(str(o)) for o in outputs]
        n = len(self.index)
        queries = self.encoder.encode(outputs, batch_size=self.batch_size, progress=False, cache=False)
        scores, ids = self.index.search(queries, n)
        dist = torch.full((len(outputs), n + 1), float("inf"))
        dist.scatter_(1, ids, self._to_distance(scores))
        if self.exact_first:
            row_min = dist[:, 1:].amin(dim=1, keepdim=True)
            dist = torch.where(self.exact_hits(outputs), row_min.expand_as(dist), dist)
        return dist

    def exact_hits(self, outputs: Sequence[str]) -> Tensor:
        """(B,) texts -> (B, N + 1) bool: the items whose title equals the output (normalised);
        all False when ``exact_first`` is off."""
        self._check_fitted()
        n = len(self.index)
        hit = torch.zeros(len(outputs), n + 1, dtype=torch.bool)
        if self.exact_first:
            exact, _ = self.exact.ground([clean_output(str(o)) for o in outputs], n)
            hit.scatter_(1, exact, True)
            hit[:, 0] = False
        return hit

    def rank(
        self,
        distances: Tensor,
        k: int,
        weights: Tensor | None = None,
        gamma: float = 0.0,
        exclude: Tensor | None = None,
        first: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Top-k items from (B, N + 1) distances, optionally reweighted: ((B, k) ids, (B, k) scores).

        weights: (B, N + 1) or (N + 1,) raw preferences (higher = preferred), see
        :func:`~recsys_grounding.reweighting.reweight`. exclude: (B, S) item ids (0-padded) never
        returned (the user's history under ``loo``). first: (B, N + 1) bool, items ranked before
        every other one (exact title matches, :meth:`exact_hits`), tied with each other.

        Scores are -D̃ (higher = better; 1 for ``first`` items, D̃ being in [0, 1]), -inf for
        ineligible items. Equal D̃ give equal scores, which the engine ranks as ties by its tie
        policy; the list's order among them (item order) means nothing to evaluation.
        """
        eligible = torch.isfinite(distances)
        eligible[:, 0] = False
        if exclude is not None:
            eligible.scatter_(1, exclude, False)  # column 0 (PAD) is already ineligible
        adjusted = reweight(distances, weights, gamma, eligible)
        if first is not None:
            adjusted = torch.where(first & eligible, torch.full_like(adjusted, -1.0), adjusted)
        k = min(k, distances.shape[1] - 1)
        # A stable sort of -D̃, so lists are reproducible (topk does not promise an order among ties).
        order = torch.sort(-adjusted, dim=1, descending=True, stable=True)
        return order.indices[:, :k], order.values[:, :k]

    def ground(self, outputs: Sequence[str], k: int) -> tuple[Tensor, Tensor]:
        """B outputs -> ((B, k) nearest items, (B, k) scores = -distance), no reweighting; exact
        title matches (``exact_first``) come first, scored just above the nearest distance."""
        dist = self.distances(outputs)
        first = self.exact_hits(outputs)
        ids, _ = self.rank(dist, k, first=first)
        scores = -dist
        best = torch.nextafter(scores[:, 1:].amax(dim=1, keepdim=True), torch.tensor(float("inf")))
        scores = torch.where(first, best.expand_as(scores), scores)
        return ids, scores.gather(1, ids)

    def grounded(self, distances: Tensor) -> Tensor:
        """(B,) bool: the nearest item is within ``threshold`` x the catalog's median
        nearest-neighbour distance (an exact title match always grounds)."""
        return distances[:, 1:].amin(dim=1) <= self.threshold * self.reference_distance

    def exact_match(self, outputs: Sequence[str]) -> Tensor:
        """(B,) bool: the output is some catalog item's title (normalised)."""
        self._check_fitted()
        ids, _ = self.exact.ground([clean_output(str(o)) for o in outputs], 1)
        return ids[:, 0] > 0
