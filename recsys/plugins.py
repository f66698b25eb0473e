"""The plugin manager: entry points of group ``recsys``, the built-in default plugins, listing.

A plugin that fails to import or validate is skipped with one line on stderr and listed with
its error by ``recsys plugins``; ``RECSYS_STRICT_PLUGINS=1`` makes that fatal (for plugin
authors and CI). ``RECSYS_LOAD_PLUGINS`` is an allow-list of distribution names: unset loads
all, an empty string loads none. ``RECSYS_TRACE_PLUGINS=1`` prints every hook call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass

import pluggy

from recsys import hookspecs

ENTRY_POINT_GROUP = "recsys"

#: Built-ins, registered exactly like third-party plugins (after them, so their
#: ``trylast`` defaults lose to any plugin's answer).
DEFAULT_PLUGINS = (
    "recsys.default_plugins.models",
    "recsys.default_plugins.datasets",
    "recsys.default_plugins.metrics",
    "recsys.default_plugins.grounders",
    "recsys.default_plugins.text",
    "recsys.default_plugins.backbones",
)

pm = pluggy.PluginManager("recsys")
pm.add_hookspecs(hookspecs)


class PluginError(RuntimeError):
    """A plugin could not be loaded, or registered something invalid."""


@dataclass
class FailedPlugin:
    name: str
    distribution: str
    version: str
    error: str


_loaded = False
_failed: list[FailedPlugin] = []
_distributions: dict[str, importlib.metadata.Distribution] = {}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _strict() -> bool:
    return os.environ.get("RECSYS_STRICT_PLUGINS", "") not in ("", "0", "false")


def _allowed_distributions() -> set[str] | None:
    allow = os.environ.get("RECSYS_LOAD_PLUGINS")
    if allow is None:
        return None
    return {_canonical(n.strip()) for n in allow.split(",") if n.strip()}


def installed_distributions():
    """Every installed distribution (a seam: tests replace it with fakes)."""
    return importlib.metadata.distributions()


def _register_entry_point(ep: importlib.metadata.EntryPoint, dist: importlib.metadata.Distribution) -> None:
    """Import one entry point and register it; on any failure, unregister and record it."""
    dist_name = dist.metadata["Name"]
    try:
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        try:
            pm.check_pending()  # a misspelled hook name is an error, not silence
            from recsys.registry import check_registrations

            check_registrations(ep.name)  # what it registers is valid, so a lookup never fails later
        except Exception:
            pm.unregister(name=ep.name)
            raise
    except Exception as exc:
        if _strict():
            raise PluginError(f"plugin {ep.name!r} (distribution {dist_name}) failed to load: {exc}") from exc
        message = f"{type(exc).__name__}: {exc}"
        print(f"recsys: skipped plugin {ep.name!r} (dist {dist_name}): {message}", file=sys.stderr)
        _failed.append(FailedPlugin(ep.name, dist_name, dist.version, message))
        return
    _distributions[ep.name] = dist


def load_plugins() -> None:
    """Load installed plugins (once), then the defaults. Cheap to call again."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Under pytest, installed plugins never leak into the suite (the llm/datasette convention).
    if not getattr(sys, "_called_from_test", False):
        allowed = _allowed_distributions()
        seen: dict[str, str] = {}  # entry-point name -> distribution that provided it
        for dist in installed_distributions():
            dist_name = dist.metadata["Name"] or ""
            if allowed is not None and _canonical(dist_name) not in allowed:
                continue
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP:
                    continue
                if ep.name in seen:
                    if _canonical(seen[ep.name]) != _canonical(dist_name):
                        message = f"entry point name {ep.name!r} is also used by {seen[ep.name]}"
                        if _strict():
                            raise PluginError(f"plugin {ep.name!r} (distribution {dist_name}): {message}")
                        print(f"recsys: skipped plugin {ep.name!r} (dist {dist_name}): {message}", file=sys.stderr)
                        _failed.append(FailedPlugin(ep.name, dist_name, dist.version, message))
                    continue
                seen[ep.name] = dist_name
                if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                    continue
                _register_entry_point(ep, dist)
    for module_name in DEFAULT_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)
    pm.check_pending()
    if os.environ.get("RECSYS_TRACE_PLUGINS", "") not in ("", "0"):
        _trace_hook_calls()


def _trace_hook_calls() -> None:
    def before(hook_name, hook_impls, kwargs):
        names = [impl.plugin_name for impl in hook_impls]
        print(f"recsys trace: {hook_name}({', '.join(kwargs)}) -> {names}", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        pass

    pm.add_hookcall_monitoring(before, after)


def get_plugins(all: bool = False, hook: str | None = None) -> list[dict]:
    """JSON-ready listing: name, hooks, version (installed plugins), error (skipped ones)."""
    load_plugins()
    plugins = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        if not all and name in DEFAULT_PLUGINS:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        if hook is not None and hook not in hooks:
            continue
        entry: dict = {"name": name, "hooks": hooks}
        dist = _distributions.get(name)
        if dist is not None:
            entry["version"] = dist.version
            entry["distribution"] = dist.metadata["Name"]
        plugins.append(entry)
    if hook is None:
        for failed in _failed:
            plugins.append(
                {"name": failed.name, "hooks": [], "version": failed.version,
                 "distribution": failed.distribution, "error": failed.error}
            )
    return plugins
