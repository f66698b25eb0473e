"""The frozen-state cache: per-sample prompt token ids and the frozen blocks' output.

Only the top blocks of the backbone are adapted; the frozen blocks below compute the same
states for a sample in every epoch, so those states (T, d) and the prompt's token ids (T,)
are computed once per sample and reused. Entries are grouped by a fingerprint of everything
that determines them (backbone, frozen depth, prompt settings, data protocol), so models that
differ only in what they train (adapter, K, gate input, lr ...) share them.

Why one process-wide instance by default (:meth:`FrozenStateCache.shared`): the benchmark
(``benchmarks/plora.py``) trains many RecLoRA variants in a row in one process, each built by
the CLI from a config, so none can be handed a cache; sharing the default instance makes the
first variant pay for the states and the rest reuse them. A model can still be given its own
(``model.state_cache = FrozenStateCache()`` before ``attach``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

#: One cached sample: prompt token ids (T,) and frozen-block states (T, d), or None when no
#: block is frozen (only the ids are kept).
Entry = tuple[Tensor, Tensor | None]
#: One sample's entries by sample index.
Store = dict[int, Entry]
#: Encodes the batch rows at the given positions: -> right-padded ids (M, T), mask (M, T) and
#: frozen-block states (M, T, d) or None.
Encoder = Callable[[list[int]], tuple[Tensor, Tensor, Tensor | None]]

#: Wall seconds spent filling caches in this process (the benchmark reports it apart from training).
CACHE_SECONDS = [0.0]


def fingerprint(value) -> str:
    """A short stable key for a JSON-able description of what the cached states depend on."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FrozenStateCache:
    """Stores of per-sample entries (:data:`Entry`), one per fingerprint (:func:`fingerprint`)."""

    shared_instance: ClassVar[FrozenStateCache | None] = None

    def __init__(self):
        self.stores: dict[str, Store] = {}

    @classmethod
    def shared(cls) -> FrozenStateCache:
        """The process-wide cache every model uses unless given another (module docstring)."""
        if cls.shared_instance is None:
            cls.shared_instance = cls()
        return cls.shared_instance

    def store(self, key: str) -> Store:
        """The entries under ``key`` (created empty); a model keeps it for its data."""
        return self.stores.setdefault(key, {})

    def __len__(self) -> int:
        """Samples cached, over every key."""
        return sum(len(s) for s in self.stores.values())


def cached_inputs(samples: Sequence[int], store: Store | None, encode: Encoder, pad_id: int,
                  dim: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Inputs of a batch, encoding only the samples ``store`` lacks.

    samples: (B,) sample indices (the cache keys); store: kept entries, or None to keep nothing
    (the batch's own entries are still computed once); encode: see :data:`Encoder`; dim: d.
    -> right-padded ids (B, T), mask (B, T), frozen-block states (B, T, d) or None.
    """
    keys = list(samples)
    known = store if store is not None else {}
    missing = [i for i, k in enumerate(keys) if k not in known]
    if missing:
        started = time.perf_counter()
        ids, mask, states = encode(missing)
        fresh = {}
        for j, i in enumerate(missing):
            n = int(mask[j].sum())  # drop the padding: entries are stored at their own length
            fresh[keys[i]] = (ids[j, :n].clone(), states[j, :n].clone() if states is not None else None)
        if store is not None:
            store.update(fresh)
        known = {**{k: known[k] for k in keys if k in known}, **fresh}
        CACHE_SECONDS[0] += time.perf_counter() - started
    return pad_entries([known[k] for k in keys], pad_id, dim)


def pad_entries(rows: Sequence[Entry], pad_id: int, dim: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Entries of lengths T_b -> right-padded ids (B, T), mask (B, T), states (B, T, d) or None
    (None when the entries have no states); T = max T_b."""
    with_states = rows[0][1] is not None
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    states = torch.zeros(len(rows), width, dim) if with_states else None
    for j, (row_ids, row_states) in enumerate(rows):
        ids[j, :len(row_ids)] = row_ids
        mask[j, :len(row_ids)] = 1
        if states is not None:
            assert row_states is not None  # entries have states all or none (with_states)
            states[j, :len(row_ids)] = row_states
    return ids, mask, states
