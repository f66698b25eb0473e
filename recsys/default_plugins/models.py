"""Built-in models, registered like any plugin's: by import path, so listing them imports no torch."""

from recsys.hookspecs import hookimpl

MODELS = (
    "recsys.models.pop.Pop",
    "recsys.models.sasrec.SASRec",
    "recsys.models.gru4rec.GRU4Rec",
    "recsys.models.narm.NARM",
    "recsys.models.caser.Caser",
    "recsys.models.core.CORE",
    "recsys.models.bert4rec.BERT4Rec",
    "recsys.models.fmlp.FMLPRec",
    "recsys.models.hstu.HSTU",
    "recsys.models.sknn.SKNN",
    "recsys.models.ease.EASE",
)


@hookimpl
def register_models(register):
    for path in MODELS:
        register(path)
