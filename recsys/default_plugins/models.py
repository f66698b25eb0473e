"""Built-in models, registered like any plugin's."""

from recsys.hookspecs import hookimpl
from recsys.models.bert4rec import BERT4Rec
from recsys.models.caser import Caser
from recsys.models.core import CORE
from recsys.models.ease import EASE
from recsys.models.fmlp import FMLPRec
from recsys.models.gru4rec import GRU4Rec
from recsys.models.hstu import HSTU
from recsys.models.narm import NARM
from recsys.models.pop import Pop
from recsys.models.sasrec import SASRec
from recsys.models.sknn import SKNN


@hookimpl
def register_models(register):
    for model in (Pop, SASRec, GRU4Rec, NARM, Caser, CORE, BERT4Rec, FMLPRec, HSTU, SKNN, EASE):
        register(model)
