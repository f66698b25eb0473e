"""The plugin manager: entry points of group ``recsys``, the built-in default plugins, listing.

A plugin that fails to import or validate, or declares a range of engine versions
(``RECSYS_API``) that this engine is outside of, is skipped with one line on stderr and listed
with its error by ``recsys plugins``; ``RECSYS_STRICT_PLUGINS=1`` makes that fatal (for plugin
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


#: The version ranges a plugin module may declare: attribute -> (label, the ``recsys`` version it
#: is checked against). A module attribute rather than a ``Requires-Dist`` on recsys-llm: API
#: versions are not distribution versions, and pip does not enforce requirements on
#: ``--no-deps`` installs or when the engine is upgraded under an installed plugin.
VERSION_RANGES = {"RECSYS_API": ("API", "API_VERSION"), "RECSYS_HOOKSPEC": ("hookspec", "HOOKSPEC_VERSION")}


def check_versions(plugin: object) -> None:
    """Raise :class:`PluginError` if ``plugin`` declares a version range (``RECSYS_API =
    ">=1.2,<2"``, ``RECSYS_HOOKSPEC``) that this engine is outside of, or a malformed one."""
    import recsys

    for attribute, (what, version_name) in VERSION_RANGES.items():
        declared = getattr(plugin, attribute, None)
        if declared is None:
            continue
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            if not isinstance(declared, str) or not declared.strip():
                raise InvalidSpecifier(declared)
            supported = SpecifierSet(declared)
        except InvalidSpecifier:
            raise PluginError(f"{attribute} = {declared!r} is not a version range (write e.g. '>=1.1,<2')") from None
        version = getattr(recsys, version_name)
        if not supported.contains(version, prereleases=True):
            raise PluginError(f"needs recsys {what} {declared} (its {attribute}); this engine has {what} {version}")


def register_plugin(plugin: object, name: str) -> None:
    """Register ``plugin`` as an entry point is: version ranges checked, hook names and
    registrations validated. On any failure nothing stays registered and the error is raised."""
    check_versions(plugin)
    pm.register(plugin, name=name)
    try:
        pm.check_pending()  # a misspelled hook name is an error, not silence
        from recsys.registry import check_registrations

        check_registrations(name)  # what it registers is valid, so a lookup never fails later
    except Exception:
        pm.unregister(name=name)
        raise


def _register_entry_point(ep: importlib.metadata.EntryPoint, dist: importlib.metadata.Distribution) -> None:
    """Import one entry point and register it; on any failure, record it (fatal in strict mode)."""
    dist_name = dist.metadata["Name"]
    try:
        register_plugin(ep.load(), ep.name)
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
