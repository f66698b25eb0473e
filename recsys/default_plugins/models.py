"""Built-in models, registered like any plugin's."""

from recsys.hookspecs import hookimpl
from recsys.models.pop import Pop
from recsys.models.sasrec import SASRec


@hookimpl
def register_models(register):
    register(Pop)
    register(SASRec)
