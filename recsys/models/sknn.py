"""Session-based kNN (SKNN) and its sequence-aware variant V-SKNN, on each user's training sequence.

Papers: Jannach & Ludewig, "When recurrent neural networks meet the neighborhood for
session-based recommendation", RecSys 2017 (SKNN); Ludewig & Jannach, "Evaluation of
session-based recommendation algorithms", UMUAI 2018 (V-SKNN: "only the very last element of the
session obtains a value of 1; the weights of the other elements are determined using a linear
decay function ... the dot product as a similarity function between the current weight-encoded
session and a binary-encoded past session"). Code read (not copied): the authors' session-rec,
``algorithms/knn/vsknn.py`` (``VMContextKNN``). RecBole 1.2.1 has no session kNN.

Here a "session" is one training user's training sequence (what the data module's training
windows contain: for ``loo``, every item but the validation and test targets), and the current
session is the batch's history window (its last ``data.max_len`` items). For a history
``s = (s_1 .. s_n)`` (oldest first) and a training sequence ``t`` (a set of items):

- weight of a history item: ``w(i) = p / n`` (``weighting='linear'``: the last item 1, the
  oldest 1/n), p its position (1-based; a repeated item takes its last position, as the dict of
  session-rec does); ``same`` gives 1 to all (plain SKNN);
- similarity: ``cosine`` (the default) = ``sum_{i in s & t} w(i) / (||w|| sqrt|t|)``, the cosine
  of the weighted history vector and the binary sequence vector (SKNN's cosine when
  ``weighting='same'``); ``dot`` = ``sum_{i in s & t} w(i) / |set(s)|``, what session-rec's
  ``VMContextKNN`` computes (its ``vec``: the 2018 paper's dot product; its ``similarity`` argument
  is not read there). They differ in dividing by ``sqrt|t|``: without it, long training sequences
  (heavy users) are everyone's neighbours; on ML-100k validation NDCG@10, k = 100: cosine 0.092,
  dot 0.076;
- neighbours: the ``k`` most similar sequences with similarity > 0 (optionally among
  ``sample_size`` candidates); the user's own training sequence is not a neighbour
  (``exclude_self``: in session-based evaluation the current session is never in the training
  set, and here it would only take a neighbour slot with items that are all in the history);
- score of item j: the sum of the similarities of the neighbours that contain j.

Everything is vectorised: the sequences are a sparse (S, N + 1) binary matrix M, the
histories a dense (B, N + 1) weight matrix Q; similarities = Q Mᵀ, scores = W M with W the
(B, S) similarities of the kept neighbours.

Differences from session-rec's ``VMContextKNN`` and why:

- ``sample_size``: session-rec keeps the 500 (its docstring) / 1000 (its signature) *most recent*
  candidate sessions, by session timestamp. Training batches carry no timestamps (and a user's
  sequence spans months), so the default here is every candidate (``None``); an int keeps that
  many candidates chosen at random (session-rec's ``sampling='random'``), by one fixed random
  order of the sequences (``sample_seed``), so scores are deterministic.
- the later scoring decay (``weighting_score``: a neighbour's contribution divided by how far
  back its most recent shared item is, from Ludewig et al. 2019) is not used: the score is the
  2018 paper's sum of similarities, as the issue asks. ``normalize`` (dividing scores by their
  max) changes no ranking and is left out; ``remind=True`` (history items are scored) is kept,
  the engine masks the history at evaluation when the data module says so.

Nothing is learned by gradient. The first training epoch collects the (user, item) pairs of the
training batches; at its end (or before the first evaluation after it) they become the
``session_*`` buffers, which checkpoints carry (their sizes come from the checkpoint when
loading). Later epochs do nothing (configs use ``max_epochs: 1``). Having no parameters, it runs
on one device (DDP refuses modules without trainable parameters, and each process would see only
its share of the training windows).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from recsys.data.batch import Batch
from recsys.models.no_gradient import NoGradientModule


def training_pairs(batch: Batch) -> Tensor:
    """(P, 2) int64 (user, item) pairs of every real item in a training batch: its histories and
    targets (together, the windows of an epoch cover each training sequence, tiled or every) and
    per-position labels if any (within those already, kept in case a window kind differs)."""
    parts = [batch.history, batch.target[:, None]] + ([batch.labels] if batch.labels is not None else [])
    items = torch.cat(parts, dim=1)  # (B, W)
    users = batch.user[:, None].expand_as(items)
    real = items != 0
    return torch.stack([users[real], items[real]], dim=1)


class InteractionSetModule(NoGradientModule):
    """A model computed in closed form from the set of training (user, item) interactions.

    The first training epoch's ``training_step`` collects the pairs (manual optimization, no
    optimizer); :meth:`fit_interactions` turns them into buffers at the end of that epoch (an
    evaluation in the middle of it, ``val_check_interval`` < 1, fits on the pairs collected so
    far, and the epoch's end fits again on all of them). Subclasses implement
    :meth:`fit_interactions` and ``score`` (calling :meth:`require_fitted` first).
    """

    train_windows = "tiled"  # fewest windows; their union is every training sequence
    fitted: Tensor  #: () bool buffer: the interactions have been collected and fitted

    def __init__(self, num_items: int, **kwargs):
        super().__init__(num_items, **kwargs)
        self.register_buffer("fitted", torch.tensor(False))
        self._pairs: list[Tensor] = []  # (P, 2) (user, item) chunks of the first epoch so far
        self._collecting = False  # inside the first training epoch

    def fit_interactions(self, users: Tensor, items: Tensor) -> None:
        """Build the model from the distinct training interactions: (P,) users and (P,) items,
        sorted by (user, item)."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self._collecting or not bool(self.fitted):
            self._collecting = True
            self._pairs.append(training_pairs(batch).cpu())
        return None

    def _fit_collected(self) -> None:
        if not self._pairs:
            return
        pairs = torch.cat(self._pairs).unique(dim=0)  # sorted by (user, item)
        self._pairs = [pairs]  # kept until the epoch ends: a later fit adds the rest of it
        if len(pairs):
            self.fit_interactions(pairs[:, 0].to(self.device), pairs[:, 1].to(self.device))
        self.fitted.fill_(True)

    def on_train_epoch_end(self) -> None:
        if self._collecting:
            self._fit_collected()
        self._pairs, self._collecting = [], False

    def require_fitted(self) -> bool:
        """Fit what was collected; False when there is nothing to score with yet (the sanity
        check before training), an error when a model that never trained is asked to score."""
        if self._collecting or not bool(self.fitted):
            self._fit_collected()
        if bool(self.fitted):
            return True
        if self._trainer is not None and self.trainer.sanity_checking:
            return False
        raise RuntimeError(
            f"{type(self).__name__} has not been fitted: its first training epoch collects the training "
            "interactions (recsys fit), or load a checkpoint of a fitted model")


class SKNN(InteractionSetModule):
    """(V-)SKNN: neighbours of the current history among the training sequences.

    Args:
        num_items: catalog size (linked from the data).
        k: neighbours kept (session-rec and the paper: 100).
        sample_size: candidates (sequences sharing an item with the history) the neighbours are
            chosen from, drawn at random by a fixed order; None = every candidate.
        weighting: position weight of the history items: ``linear`` (p / n, V-SKNN; session-rec's
            ``div``), ``quadratic`` ((p / n)^2), ``same`` (1: plain SKNN).
        similarity: ``cosine`` (weighted overlap / (||w|| sqrt|t|): plain SKNN's with
            ``weighting='same'``) or ``dot`` (weighted overlap / distinct history items: what
            session-rec's V-SKNN computes).
        exclude_self: the user's own training sequence is not a neighbour.
        sample_seed: seed of the candidate order used by ``sample_size``.
    """

    session_users: Tensor  #: (S,) int64 user of each training sequence, ascending
    session_offsets: Tensor  #: (S + 1,) int64 offsets of each sequence's items in session_items
    session_items: Tensor  #: (nnz,) int64 distinct items of each sequence, ascending within it

    _SIZED = ("session_users", "session_offsets", "session_items")

    def __init__(
        self,
        num_items: int,
        k: int = 100,
        sample_size: int | None = None,
        weighting: Literal["linear", "quadratic", "same"] = "linear",
        similarity: Literal["cosine", "dot"] = "cosine",
        exclude_self: bool = True,
        sample_seed: int = 0,
        **kwargs,
    ):
        super().__init__(num_items, **kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if sample_size is not None and sample_size < 1:
            raise ValueError(f"sample_size must be >= 1 (or None for every candidate), got {sample_size}")
        if weighting not in ("linear", "quadratic", "same"):
            raise ValueError(f"weighting must be 'linear', 'quadratic' or 'same', got {weighting!r}")
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
        self.save_hyperparameters()
        self.k, self.sample_size, self.weighting, self.similarity = k, sample_size, weighting, similarity
        self.exclude_self, self.sample_seed = exclude_self, sample_seed
        self.register_buffer("session_users", torch.zeros(0, dtype=torch.long))
        self.register_buffer("session_offsets", torch.zeros(1, dtype=torch.long))
        self.register_buffer("session_items", torch.zeros(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The sequence buffers' sizes depend on the data: take them from the checkpoint.
        for name in self._SIZED:
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit_interactions(self, users: Tensor, items: Tensor) -> None:
        session_users, counts = torch.unique_consecutive(users, return_counts=True)
        self.session_users = session_users
        self.session_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.session_items = items.clone()

    def _sequences(self, transpose: bool = False) -> Tensor:
        """(S, N + 1) float sparse binary matrix of the training sequences ((N + 1, S) if ``transpose``)."""
        rows = torch.repeat_interleave(torch.arange(len(self.session_users), device=self.session_items.device),
                                       self.session_offsets.diff())
        index = torch.stack([self.session_items, rows] if transpose else [rows, self.session_items])
        size = (len(self.session_users), self.num_items + 1)
        return torch.sparse_coo_tensor(index, torch.ones(len(rows), device=rows.device),
                                       size=size[::-1] if transpose else size, check_invariants=True).coalesce()

    def query_weights(self, history: Tensor) -> Tensor:
        """(B, L) left-padded history -> (B, N + 1) weight of each item (0 if absent; a repeated
        item has the weight of its last position)."""
        real = history != 0
        n = real.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        position = real.long().cumsum(dim=1)  # (B, L): 1..n along the real items, oldest first
        if self.weighting == "same":
            weight = real.float()
        else:
            weight = position.float() / n
            if self.weighting == "quadratic":
                weight = weight**2
        weight = torch.where(real, weight, 0.0)
        q = torch.zeros(len(history), self.num_items + 1, device=history.device)
        q.scatter_reduce_(1, history, weight, reduce="amax")  # last occurrence = largest weight
        q[:, 0] = 0.0
        return q

    def neighbour_weights(self, history: Tensor, user: Tensor) -> Tensor:
        """(B, S) similarity of each history to each training sequence, 0 outside its ``k``
        neighbours (and its ``sample_size`` candidates)."""
        sequences = self._sequences()
        q = self.query_weights(history)  # (B, N + 1)
        sims = torch.sparse.mm(sequences, q.T).T.contiguous()  # (B, S): weighted overlaps
        if self.similarity == "dot":
            distinct = (q > 0).sum(dim=1, keepdim=True).clamp(min=1)
            sims = sims / distinct
        else:
            lengths = self.session_offsets.diff().float().clamp(min=1)  # (S,)
            norm = q.norm(dim=1, keepdim=True).clamp(min=1e-12)
            sims = sims / norm / lengths.sqrt()[None, :]
        if self.exclude_self and len(self.session_users):
            row = torch.searchsorted(self.session_users, user).clamp(max=len(self.session_users) - 1)
            own = self.session_users[row] == user
            sims[own.nonzero().flatten(), row[own]] = 0.0
        if self.sample_size is not None and self.sample_size < sims.shape[1]:
            generator = torch.Generator().manual_seed(self.sample_seed)
            order = torch.randperm(sims.shape[1], generator=generator).to(sims.device).float()
            priority = torch.where(sims > 0, order[None, :], -1.0)
            chosen = priority.topk(self.sample_size, dim=1).indices
            sampled = torch.zeros_like(sims, dtype=torch.bool).scatter_(1, chosen, True)
            sims = torch.where(sampled, sims, 0.0)
        top = sims.topk(min(self.k, sims.shape[1]), dim=1)
        return torch.zeros_like(sims).scatter_(1, top.indices, top.values)

    def score(self, batch: Batch) -> Tensor:
        if not self.require_fitted() or len(self.session_users) == 0:
            return torch.zeros(len(batch.target), self.num_items + 1, device=batch.history.device)
        weights = self.neighbour_weights(batch.history, batch.user)  # (B, S)
        return torch.sparse.mm(self._sequences(transpose=True), weights.T).T.contiguous()  # (B, N + 1)
