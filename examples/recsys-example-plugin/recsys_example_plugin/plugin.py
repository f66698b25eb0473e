"""The module the ``recsys`` entry point names: what this package adds to the engine."""

import recsys
from recsys_example_plugin.item_knn import ItemKNN
from recsys_example_plugin.metrics import precision

#: The recsys public API versions this plugin works with; checked when the engine loads it.
RECSYS_API = ">=1.8,<2"  # 1.8: NoGradientModule


@recsys.hookimpl
def register_models(register):
    register(ItemKNN)


@recsys.hookimpl
def register_metrics(register):
    register("precision", precision)
