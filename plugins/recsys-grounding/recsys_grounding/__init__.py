"""recsys-grounding: generate an item in language, then ground it to real items (BIGRec)."""

from recsys_grounding.data import FewShotSeqDataModule
from recsys_grounding.grounders import EmbeddingGrounder
from recsys_grounding.model import BIGRec
from recsys_grounding.reweight import minmax, reweight

__all__ = ["BIGRec", "EmbeddingGrounder", "FewShotSeqDataModule", "minmax", "reweight"]
