"""Built-in grounders."""

from recsys.hookspecs import hookimpl


@hookimpl
def register_grounders(register):
    register("recsys.grounding.ExactTitleGrounder")
