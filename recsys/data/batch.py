"""The batch every model receives."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from torch import Tensor


class Batch(NamedTuple):
    """A batch of (history -> target) windows.

    A NamedTuple, not a frozen dataclass: Lightning moves NamedTuples between devices.
    """

    history: Tensor  #: (B, L) int64 item indices, left-padded with 0 = PAD, oldest first
    target: Tensor  #: (B,) int64 item index to predict; 0 when unknown (predict runs)
    user: Tensor  #: (B,) int64 user index (1..U)
    seen: Optional[Tensor] = None  #: (B, S) int64, left-padded: every item before the target, masked at evaluation
    #: (B, L) int64: the next item to predict at each history position, 0 where that position is
    #: not a training target in this window (tiled training windows only; None elsewhere)
    labels: Optional[Tensor] = None
    #: (B,) bool: the target is a cold item (held out of training by ``SeqDataModule(cold_items=...)``);
    #: evaluation batches only, None when no items are held out
    cold: Optional[Tensor] = None
    #: (B,) int64: each window's position in its dataset, unique within an evaluation stage; lets the
    #: evaluation loop count every window once when a distributed sampler pads ranks with repeats
    index: Optional[Tensor] = None  # type: ignore[assignment]  # the field deliberately shadows tuple.index
    #: (B, C) int64: the items this window's target is ranked among (``SeqDataModule(candidates=...)``),
    #: 0-padded; evaluation batches only, None = the whole catalog
    candidates: Optional[Tensor] = None

    def select(self, rows: Tensor) -> "Batch":
        """The batch of some of its windows: ``rows`` is a (b,) int64 index or a (B,) bool mask;
        every per-window field is indexed alike, fields that are None stay None."""
        fields: list[Any] = [None if field is None else field[rows] for field in self]  # the first three are never None
        return type(self)(*fields)
