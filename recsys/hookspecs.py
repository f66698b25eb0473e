"""Every hook a plugin may implement. One-line docstrings; the reference is docs/plugins.md.

Registration hooks receive a host-owned ``register`` callback and return nothing: the host
validates what is registered, rejects duplicate names and records which plugin did it.
"""

from __future__ import annotations

from typing import Any, Mapping

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("recsys")
hookimpl = HookimplMarker("recsys")

#: Version of the hook specifications below: the minor number grows when hooks or arguments are
#: added, the major one when one is removed or changes meaning. Plugins may declare the range
#: they support (``RECSYS_HOOKSPEC = ">=1.1,<2"``), checked when they load.
HOOKSPEC_VERSION = "1.2"  # 1.1: register_item_templates; register_backbones(build=); 1.2: register_rerankers


@hookspec
def register_models(register):
    """Register trainable models: register(cls), cls a subclass of recsys.RecModule."""


@hookspec
def register_datasets(register):
    """Register raw-data converters: register(name, convert), convert(raw, out, **options) writes atomic files."""


@hookspec
def register_metrics(register):
    """Register ranking metrics: register(name, fn), fn(ranks: (B,) int64, k: int | None) -> (B,) float."""


@hookspec
def register_grounders(register):
    """Register grounders mapping generated outputs to catalog items: register(cls), cls a recsys.Grounder."""


@hookspec
def register_rerankers(register):
    """Register rerankers reordering candidate items: register(cls), cls a recsys.Reranker (or its import path)."""


@hookspec
def register_backbones(register):
    """Register named LLM sources: register(name, hub_id, local=None, build=None, install=None); local() -> from_pretrained kwargs or None; build() -> (config, tokenizer) of a random model."""


@hookspec
def register_item_templates(register):
    """Register item text templates: register(name, fn, dataset=None), fn(item: dict, dataset: str) -> str; a dataset-specific one wins."""


@hookspec(firstresult=True)
def item_to_text(item: Mapping[str, Any], dataset: str) -> str | None:
    """Render one item row as the text an LLM sees; the first non-None answer wins (the default is trylast)."""
