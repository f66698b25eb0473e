"""The built-in models pass the contract every model plugin runs (recsys.testing)."""

from typing import ClassVar

import recsys.testing
from recsys.models.pop import Pop
from recsys.models.sasrec import SASRec


class TestPop(recsys.testing.ModelContract):
    model = Pop  # registered by the built-in plugin: no `plugin` to give
    learn = None  # the reference the "learns" contract compares with


class TestSASRec(recsys.testing.ModelContract):
    model = SASRec
    init_args: ClassVar[dict] = {"max_len": 5, "d_model": 8, "ffn_dim": 16}
    learn: ClassVar[dict] = {"max_epochs": 10, "init_args": {"lr": 0.005}}
