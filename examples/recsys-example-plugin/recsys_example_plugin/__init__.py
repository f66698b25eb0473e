"""recsys-example-plugin: what a third-party recsys plugin looks like (ItemKNN + precision@k)."""

from recsys_example_plugin.item_knn import ItemKNN
from recsys_example_plugin.metrics import precision

__all__ = ["ItemKNN", "precision"]
