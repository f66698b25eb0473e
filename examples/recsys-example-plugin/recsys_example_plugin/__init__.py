"""recsys-example-plugin: what a third-party recsys plugin looks like (ItemKNN + precision@k)."""

import recsys

# Names load on first use (PEP 562): the `recsys` entry point imports this package, and
# `recsys plugins` / `recsys models` should not pay for torch to list it.
_EXPORTS = {
    "ItemKNN": "recsys_example_plugin.item_knn",
    "precision": "recsys_example_plugin.metrics",
}
__getattr__, __dir__ = recsys.lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
