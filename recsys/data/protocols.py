"""Evaluation protocols: which interactions train, and which are held out as targets.

A sequential protocol is an :class:`EvaluationProtocol`: a small class with a ``name`` (what
``data.protocol`` and the results show), a ``default_mask_history``, :meth:`~EvaluationProtocol.split`
(interactions -> a :class:`~recsys.data.sequences.Split`) and :meth:`~EvaluationProtocol.explain_empty`
(why a dataset has no validation or test window). The built-ins are in :data:`PROTOCOLS`:

- ``loo`` (:class:`LeaveOneOutProtocol`): per user, the last item is the test target and the one
  before it the validation target.
- ``global_time`` (:class:`GlobalTimeProtocol`, BIGRec's): all interactions cut 8:1:1 by time.

Another protocol needs no registration (this package never imports the plugin manager): pass an
instance or a subclass to ``SeqDataModule(protocol=...)``, or in a LightningCLI config::

    data:
      class_path: recsys.SeqDataModule
      init_args:
        protocol:
          class_path: my_package.LastTwoOut

The CTR protocol (:class:`CTRProtocol`, used by :class:`~recsys.data.ctr.CTRDataModule`) is
pointwise: its samples are single ratings, not windows over a sequence, so it is not an
:class:`EvaluationProtocol` and not in :data:`PROTOCOLS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal, get_args

import numpy as np
import pandas as pd

from recsys.data.atomic import DataFormatError
from recsys.data.filters import ITEM, TIME
from recsys.data.sequences import GlobalTime, LeaveOneOut, Sequences, Split

#: Column of :attr:`~recsys.data.dataset.SequenceData.interactions`: each row's position in the
#: file (after duplicates are dropped and filters applied), the last tie-break of a global order.
ROW = "_row"


class EvaluationProtocol:
    """Base class of a sequential evaluation protocol (see the module docstring).

    Subclasses set ``name`` and ``default_mask_history`` and implement :meth:`split`. The
    constructor takes no required argument, so a config can name a subclass by ``class_path``
    alone (``init_args`` set a subclass's own options).
    """

    #: what ``data.protocol`` and the results show; unique among the protocols a project uses
    name: ClassVar[str] = ""
    #: whether evaluation ranks only items the user has not interacted with before the target
    #: (``SeqDataModule(mask_history=None)`` takes this)
    default_mask_history: ClassVar[bool] = True
    #: whether users with no test target are worth a warning (rather than an info line) at load
    warn_unevaluated: ClassVar[bool] = False

    def split(self, sequences: Sequences, interactions: pd.DataFrame, tie_break: str, path: Path) -> Split:
        """The split of ``sequences`` under this protocol.

        Args:
            sequences: every user's items in time order (CSR).
            interactions: the same interactions, one row per entry of ``sequences.items`` and in
                its order: ``user_id`` and ``item_id`` (indices), ``timestamp`` when the file has
                one, ``rating`` when it has one, ``_row`` (file order).
            tie_break: the loader's order of equal timestamps (``file`` or ``item``).
            path: the interactions file, to name in errors.
        """
        raise NotImplementedError

    def explain_empty(self, sequences: Sequences) -> str:
        """Why the split has no validation or no test window (the data module raises it as a
        :class:`~recsys.data.atomic.DataFormatError` after the dataset path)."""
        return f"no validation or no test window ({sequences.num_users} users) under the {self.name} protocol"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LeaveOneOutProtocol(EvaluationProtocol):
    """``loo``: per user, the last item is the test target, the one before it the validation
    target (:class:`~recsys.data.sequences.LeaveOneOut`). History is masked by default (HLLM)."""

    name = "loo"
    default_mask_history = True
    warn_unevaluated = True

    def split(self, sequences, interactions, tie_break, path):
        return LeaveOneOut(sequences)

    def explain_empty(self, sequences):
        return (f"no user has 3 or more interactions ({sequences.num_users} users); the loo protocol "
                "needs a training item, a validation target and a test target per user")


class GlobalTimeProtocol(EvaluationProtocol):
    """``global_time`` (BIGRec's): all interactions ordered by time and cut 8:1:1
    (:class:`~recsys.data.sequences.GlobalTime`). History is not masked by default (BIGRec)."""

    name = "global_time"
    default_mask_history = False

    def split(self, sequences, interactions, tie_break, path):
        if TIME not in interactions.columns:
            raise DataFormatError(f"{path}: the global_time protocol needs a {TIME!r} field")
        # Global order: time, then the tie-break each user's sequence uses, so periods never go
        # backwards along a user's sequence.
        keys = [interactions[ROW].to_numpy()]  # np.lexsort: the last key sorts first
        if tie_break == "item":
            keys.append(interactions[ITEM].to_numpy())
        order = np.lexsort(keys + [interactions[TIME].to_numpy()])
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return GlobalTime.from_order(sequences, rank)

    def explain_empty(self, sequences):
        return (f"no interaction of the validation or of the test period has an earlier item of its user "
                f"({sequences.num_users} users); the {self.name} protocol needs both")


#: The built-in sequential protocols by name (what ``data.protocol: NAME`` accepts).
PROTOCOLS: dict[str, type[EvaluationProtocol]] = {cls.name: cls for cls in (LeaveOneOutProtocol, GlobalTimeProtocol)}
#: Their names as a type: a config's misspelt name is a parse error listing the choices.
ProtocolName = Literal["loo", "global_time"]
assert set(get_args(ProtocolName)) == set(PROTOCOLS), "ProtocolName must list the names in PROTOCOLS"

def resolve_protocol(protocol: str | EvaluationProtocol | type[EvaluationProtocol]) -> EvaluationProtocol:
    """A protocol from a name in :data:`PROTOCOLS`, an :class:`EvaluationProtocol` instance, or a
    subclass (instantiated without arguments)."""
    if isinstance(protocol, type) and issubclass(protocol, EvaluationProtocol):
        protocol = protocol()
    elif isinstance(protocol, str) and protocol in PROTOCOLS:
        protocol = PROTOCOLS[protocol]()
    if not isinstance(protocol, EvaluationProtocol):
        raise ValueError(f"data.protocol {protocol!r} is not supported; available: {list(PROTOCOLS)}, "
                         "or an EvaluationProtocol (recsys.data.protocols)")
    if not protocol.name:
        raise ValueError(f"data.protocol {protocol!r}: an EvaluationProtocol needs a name")
    return protocol


# --------------------------------------------------------------------------- CTR (pointwise)

CTRStage = Literal["train", "val", "test"]
CTR_STAGES: tuple[CTRStage, ...] = ("train", "val", "test")


class CTRProtocol:
    """The CTR protocol (RecLoRA, ReLLa): every rating is a sample. All interactions are ordered
    by global time (timestamp, then user, then the user's own order) and cut into
    train/validation/test by rank at the ``split`` quantiles; samples with fewer than
    ``min_history`` earlier ratings of their user are dropped after the cut (they still count
    towards the proportions and stay in later samples' histories)."""

    name: ClassVar[str] = "ctr"

    def __init__(self, split: Sequence[float] = (0.8, 0.1, 0.1), min_history: int = 5):
        if len(split) != 3 or any(s < 0 for s in split) or not np.isclose(sum(split), 1.0):
            raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {list(split)}")
        if min_history < 0:
            raise ValueError(f"data.min_history must be >= 0, got {min_history}")
        self.fractions, self.min_history = tuple(split), int(min_history)

    def cut(self, offsets: np.ndarray, timestamp: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Interactions in CSR order (user ``u``'s are ``[offsets[u], offsets[u + 1])``, time-ordered)
        -> ``split_of`` (n,) int8 (0 train, 1 val, 2 test) and, per stage, the (S,) int64 interaction
        indices kept as samples, in global time order."""
        n = len(timestamp)
        users = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        position = np.arange(n) - offsets[users]
        # Global time order; ties by user, then by the user's own order: a total, deterministic order.
        order = np.lexsort((position, users, timestamp))
        split = self.fractions
        cut_train, cut_val = round(split[0] * n), round((split[0] + split[1]) * n)
        split_of = np.empty(n, np.int8)
        split_of[order[:cut_train]], split_of[order[cut_train:cut_val]], split_of[order[cut_val:]] = 0, 1, 2
        keep = position >= self.min_history
        samples: dict[str, np.ndarray] = {stage: order[(split_of[order] == code) & keep[order]].astype(np.int64)
                   for code, stage in enumerate(CTR_STAGES)}
        return split_of, samples

    def explain_empty(self, stage: CTRStage) -> str:
        """Why ``stage`` has no sample (the data module raises it after the dataset path)."""
        return (f"the {stage} split has no sample with at least min_history={self.min_history} "
                "earlier ratings; lower data.min_history or use more data")


__all__ = ["PROTOCOLS", "CTRProtocol", "EvaluationProtocol", "GlobalTimeProtocol", "LeaveOneOutProtocol",
           "resolve_protocol"]
