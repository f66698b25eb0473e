"""recsys: a plugin-based engine for LLM-based sequential recommendation.

The public API: everything a plugin needs is importable from here. Anything else
(``recsys.data.sequences`` internals, ``recsys.cli`` helpers) may change without notice.
"""

__version__ = "0.1.0"

from recsys.data.atomic import DataFormatError, read_atomic, write_atomic, write_dataset
from recsys.data.batch import Batch
from recsys.data.catalog import Catalog
from recsys.data.converters import save_converted
from recsys.data.datamodule import RecDataModule, SeqDataModule
from recsys.grounding import ExactTitleGrounder, Grounder
from recsys.hookspecs import HOOKSPEC_VERSION, hookimpl
from recsys.models.base import RecModule, SeqRecModule
from recsys.plugins import PluginError, get_plugins, load_plugins
from recsys.registry import get_backbones, get_datasets, get_grounders, get_metrics, get_models, item_to_text

__all__ = [
    "Batch", "Catalog", "DataFormatError", "ExactTitleGrounder", "Grounder", "HOOKSPEC_VERSION", "PluginError",
    "RecDataModule", "RecModule", "SeqDataModule", "SeqRecModule", "get_backbones", "get_datasets",
    "get_grounders", "get_metrics", "get_models", "get_plugins", "hookimpl", "item_to_text", "load_plugins",
    "read_atomic", "save_converted", "write_atomic", "write_dataset",
]
