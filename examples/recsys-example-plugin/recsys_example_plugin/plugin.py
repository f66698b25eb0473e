"""The module the ``recsys`` entry point names: what this package adds to the engine."""

import recsys

#: The recsys public API versions this plugin works with; checked when the engine loads it.
RECSYS_API = ">=1.9,<2"  # 1.9: registration by import path


# Import paths rather than the objects: `recsys plugins` and `recsys models` list them without
# importing torch; the engine imports each at first use.
@recsys.hookimpl
def register_models(register):
    register("recsys_example_plugin.item_knn.ItemKNN")


@recsys.hookimpl
def register_metrics(register):
    register("precision", "recsys_example_plugin.metrics.precision")
