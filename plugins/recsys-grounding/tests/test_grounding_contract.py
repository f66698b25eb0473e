"""BIGRec passes the contract every model plugin runs (recsys.testing)."""

from typing import ClassVar

import recsys_grounding.plugin
from recsys_grounding import BIGRec
import recsys.testing


class TestBIGRec(recsys.testing.ModelContract):
    model = BIGRec
    plugin = recsys_grounding.plugin
    init_args: ClassVar[dict] = {"backbone": "tiny-llama", "max_new_tokens": 4, "num_beams": 3, "num_return_sequences": 3,
                                 "lr": 0.003, "warmup_steps": 0, "history_items": 3}
    max_epochs = 1
