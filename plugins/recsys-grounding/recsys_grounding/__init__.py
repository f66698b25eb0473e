"""recsys-grounding: generate an item in language, then ground it to real items (BIGRec)."""

import recsys

# Names load on first use (PEP 562): the `recsys` entry point imports this package, and
# `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {
    "BIGRec": "recsys_grounding.model",
    "EmbeddingGrounder": "recsys_grounding.grounders",
    "FewShotSeqDataModule": "recsys_grounding.data",
    "minmax": "recsys_grounding.reweighting",
    "reweight": "recsys_grounding.reweighting",
}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
