"""Built-in grounders."""

from recsys.grounding import ExactTitleGrounder
from recsys.hookspecs import hookimpl


@hookimpl
def register_grounders(register):
    register(ExactTitleGrounder)
