"""recsys: a plugin-based engine for LLM-based sequential recommendation.

The public API: everything a plugin needs is importable from here (``__all__``), plus the
plugin test kit ``recsys.testing``; anything else may change without notice. Names are
imported on first use (PEP 562), so ``import recsys`` in a plugin, or ``recsys --help``, does
not pay for torch and Lightning.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

from recsys.hookspecs import HOOKSPEC_VERSION as HOOKSPEC_VERSION, hookimpl as hookimpl

__version__ = "0.1.0"

#: Version of the public API below and of ``recsys.testing``: the minor number grows when names
#: are added, the major one when a name is removed or changes meaning. Plugins declare the
#: range they support (``RECSYS_API = ">=1.2,<2"``), checked when they load.
API_VERSION = "1.9"  # 1.1: LLM building blocks (recsys.llm, ItemIndex, item templates); 1.2: recsys.testing;
# 1.3: the CTR protocol (CTRBatch, CTRDataModule, CTRModule, load_ctr); item-embedding shards
# (ShardWriter, ItemShardDataModule, TextItemEmbedder, load_shards, iter_shards); Batch.index;
# 1.4: normalize_title, RecModule.monitor, recsys.pytest_plugin;
# 1.5: extension points: RecModule.catalog/set_catalog/on_catalog/logged_metrics,
# SeqRecModule.is_dense/report_metric, RecDataModule.loader, recsys.testing.run_cli, recsys.llm
# declared public (IGNORE_INDEX, unwrap_peft, response_loss, add_lora(**peft_kwargs));
# recsys.metrics (recsys.eval is its deprecated alias), recsys.plugins owns the lookups
# (recsys.registry is its deprecated alias); 1.6: SeqRecModule.evaluated_ranks (per-window test ranks);
# 1.7: ItemLoss and NextItemModule (the shared next-item losses); 1.8: config_problems (RecModule,
# RecDataModule: cross-field checks before anything is built), atomic_path (umask-respecting atomic writes),
# NoGradientModule (models without gradient training: no optimizer, no lr option); 1.9: registration
# by import path (register("pkg.module.Name"): imported at first use), lazy_exports (a plugin
# package's names loaded on first use); CandidateLists, keep_candidates, Batch.candidates (evaluation
# among per-user candidate lists); Reranker and get_rerankers (hookspec 1.2: register_rerankers)

_EXPORTS = {
    "lazy_exports": "recsys.lazy",
    "Batch": "recsys.data.batch",
    "Catalog": "recsys.data.catalog",
    "DataFormatError": "recsys.data.atomic",
    "read_atomic": "recsys.data.atomic",
    "write_atomic": "recsys.data.atomic",
    "write_dataset": "recsys.data.atomic",
    "atomic_path": "recsys.data.atomic",
    "save_converted": "recsys.data.converters",
    "RecDataModule": "recsys.data.datamodule",
    "SeqDataModule": "recsys.data.datamodule",
    "EvaluationProtocol": "recsys.data.protocols",
    "CandidateLists": "recsys.data.candidates",
    "keep_candidates": "recsys.metrics",
    "CTRBatch": "recsys.data.ctr",
    "CTRDataModule": "recsys.data.ctr",
    "load_ctr": "recsys.data.ctr",
    "CTRModule": "recsys.models.ctr",
    "Grounder": "recsys.grounding",
    "ExactTitleGrounder": "recsys.grounding",
    "normalize_title": "recsys.grounding",
    "mask_seen": "recsys.metrics",
    "dense_ranks": "recsys.metrics",
    "list_ranks": "recsys.metrics",
    "RecModule": "recsys.models.base",
    "SeqRecModule": "recsys.models.base",
    "NoGradientModule": "recsys.models.no_gradient",
    "ItemLoss": "recsys.models.losses",
    "NextItemModule": "recsys.models.losses",
    "PluginError": "recsys.plugins",
    "get_plugins": "recsys.plugins",
    "load_plugins": "recsys.plugins",
    "get_backbones": "recsys.plugins",
    "get_datasets": "recsys.plugins",
    "get_grounders": "recsys.plugins",
    "get_rerankers": "recsys.plugins",
    "Reranker": "recsys.rerankers",
    "get_metrics": "recsys.plugins",
    "get_models": "recsys.plugins",
    "item_to_text": "recsys.plugins",
    "get_item_templates": "recsys.plugins",
    "ItemIndex": "recsys.index",
    "ItemShardDataModule": "recsys.shards",
    "ShardWriter": "recsys.shards",
    "TextItemEmbedder": "recsys.shards",
    "iter_shards": "recsys.shards",
    "load_shards": "recsys.shards",
    "Backbone": "recsys.llm.backbones",
    "BackboneUnavailable": "recsys.llm.backbones",
    "load_backbone": "recsys.llm.backbones",
    "TextEncoder": "recsys.llm.encoder",
    "embed_texts": "recsys.llm.encoder",
    "TrainableOnlyCheckpoint": "recsys.llm.lora",
    "add_lora": "recsys.llm.lora",
    "merge_lora": "recsys.llm.lora",
    "render_item_text": "recsys.llm.templates",
}

__all__ = sorted([*_EXPORTS, "API_VERSION", "HOOKSPEC_VERSION", "hookimpl"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
