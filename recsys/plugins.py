"""Plugins and what they registered: the plugin manager, loading, version checks, validation of
registrations, and the lookups (``get_models``, ``get_metrics``, ``get_backbones``, ...).

Plugins are entry points of group ``recsys``, then the built-in default plugins. A plugin that
fails to import or validate, or declares a range of engine versions (``RECSYS_API``) that this
engine is outside of, is skipped with one line on stderr and listed with its error by ``recsys
plugins``; ``RECSYS_STRICT_PLUGINS=1`` makes that fatal (for plugin authors and CI).
``RECSYS_LOAD_PLUGINS`` is an allow-list of distribution names: unset loads all, an empty string
loads none. ``RECSYS_TRACE_PLUGINS=1`` prints one line on stderr before every hook call (its
arguments and the plugins answering) and one after it (its result), registrations included.

Registration hooks are called at every lookup (no cache), through pluggy's dispatch, one plugin
at a time (``pm.subset_hook_caller``), so late registration from tests or notebooks just works and
every entry records the plugin that made it. Duplicate names are errors naming both registrants.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union, cast

import pluggy

from recsys import hookspecs
from recsys.lazy import object_at

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
    # Built-ins first: a plugin registering a name they hold (a metric called `hit`) is the
    # one skipped, with an error naming both, instead of breaking every run later.
    for module_name in DEFAULT_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)
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
    pm.check_pending()
    if os.environ.get("RECSYS_TRACE_PLUGINS", "") not in ("", "0"):
        _trace_hook_calls()


#: Longest result ``RECSYS_TRACE_PLUGINS`` prints (its repr is cut there, with "...").
TRACE_REPR_CHARS = 100


def _trace_hook_calls(file=None) -> Callable[[], None]:
    """Print every hook call on ``file`` (stderr): before it, the hook, its argument names and the
    plugins answering; after it, its result (repr, cut to :data:`TRACE_REPR_CHARS`) or its error.
    Returns the function that stops tracing."""

    def before(hook_name, hook_impls, kwargs):
        names = [impl.plugin_name for impl in hook_impls]
        print(f"recsys trace: {hook_name}({', '.join(kwargs)}) -> {names}", file=file or sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        if outcome.exception is not None:
            shown = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
        else:
            shown = f"returned {outcome.get_result()!r}"
        if len(shown) > TRACE_REPR_CHARS:
            shown = shown[: TRACE_REPR_CHARS - 3] + "..."
        print(f"recsys trace: {hook_name} {shown}", file=file or sys.stderr)

    return pm.add_hookcall_monitoring(before, after)


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


# ---- what plugins registered ---------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    """One registered thing: its name, what was registered (``target``: the object, or the import
    path ``"package.module.Name"`` it is imported from on first use of :attr:`obj`), and the plugin
    that registered it. Registering a path keeps ``recsys plugins`` / ``recsys models`` from
    importing the module (torch, Lightning, transformers) just to list a name."""

    name: str
    target: Any
    plugin: str
    extra: dict = field(default_factory=dict)
    #: Validates the imported object of a path registration (the checks an object gets at once).
    check: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        """Where the object is defined (``package.module.Name``), read without importing it."""
        return self.target if isinstance(self.target, str) else _where(self.target)

    @cached_property
    def obj(self) -> Any:
        """The registered object (a path is imported and validated here, the first time)."""
        if not isinstance(self.target, str):
            return self.target
        try:
            value = object_at(self.target)
            if value is None:
                raise ImportError(f"module {self.target.rpartition('.')[0]!r} has no attribute "
                                  f"{self.target.rpartition('.')[2]!r}")
            if self.check is not None:
                self.check(value)
        except Exception as exc:
            raise PluginError(f"plugin {self.plugin!r} registered {self.name!r} as {self.target!r}, which cannot "
                              f"be used: {type(exc).__name__}: {exc}") from exc
        return value


@dataclass(frozen=True)
class BackboneSource:
    """A named LLM source (``register_backbones``): ``hub_id`` (``None`` for a random model),
    ``local()`` -> ``from_pretrained`` kwargs of a packaged offline copy or ``None``, ``build()``
    -> ``(config, tokenizer)`` of a randomly initialised model, ``install`` the command that
    installs the offline copy, ``plugin`` the plugin that registered it."""

    name: str
    hub_id: str | None
    local: Callable[[], dict | None] | None = None
    build: Callable[[], tuple] | None = None
    install: str | None = None
    plugin: str = ""

    @property
    def obj(self) -> str | None:
        """Deprecated (API 1.4's ``Registered.obj``): read ``hub_id``."""
        warnings.warn("BackboneSource.obj is deprecated; read .hub_id", DeprecationWarning, stacklevel=2)
        return self.hub_id

    @property
    def extra(self) -> Mapping[str, Any]:
        """Deprecated (API 1.4's ``Registered.extra``): read ``local``, ``build``, ``install``."""
        warnings.warn("BackboneSource.extra is deprecated; read .local, .build, .install",
                      DeprecationWarning, stacklevel=2)
        return MappingProxyType({"local": self.local, "build": self.build, "install": self.install})


Entry = Union[Registered, BackboneSource]


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}"


def _describe(entry: Entry) -> str:
    """Where a registered thing is defined, for the duplicate-name error."""
    if isinstance(entry, BackboneSource):
        return _where(entry.build) if entry.build is not None else f"hub id {entry.hub_id!r}"
    return entry.path


def _same(a: Entry, b: Entry) -> bool:
    """Whether two registrations under one name register the same thing (then it is no clash)."""
    if isinstance(a, BackboneSource) and isinstance(b, BackboneSource):
        return (a.hub_id, a.local, a.build, a.install) == (b.hub_id, b.local, b.build, b.install)
    if isinstance(a, Registered) and isinstance(b, Registered):
        if not isinstance(a.target, str) and not isinstance(b.target, str):
            return a.target is b.target
        # a path against a path, or against an object defined under a name of its own (a class or
        # function); an instance, partial or lambda has no path of its own, so it never matches
        return _defined_at(a.target) is not None and _defined_at(a.target) == _defined_at(b.target)
    return False


def _defined_at(target: Any) -> str | None:
    """The import path ``target`` can be imported back from, without importing anything."""
    if isinstance(target, str):
        return target
    if (inspect.isclass(target) or inspect.isfunction(target)) and "<" not in target.__qualname__:
        return f"{target.__module__}.{target.__qualname__}"
    return None


def _collect(hook_name: str, make: Callable[..., Entry], only: str | None = None) -> dict[str, Entry]:
    """Call every implementation of a ``register_*`` hook and collect what it registers.

    Each plugin's implementation is called on its own, through pluggy's dispatch
    (``pm.subset_hook_caller`` without every other plugin), so the entries it registers record
    its name and hook-call monitoring (``RECSYS_TRACE_PLUGINS``) sees the call.
    ``make(*args, **kwargs)`` turns one ``register(...)`` call into an entry (validating it); the
    plugin name is filled in here. ``only`` limits the call to one plugin.
    """
    if only is None:
        load_plugins()
    found: dict[str, Entry] = {}
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    # pluggy calls implementations last-registered first; keep that order.
    for impl in reversed(impls):
        plugin_name = impl.plugin_name
        if only is not None and plugin_name != only:
            continue
        call = pm.subset_hook_caller(hook_name, remove_plugins=[other.plugin for other in impls if other is not impl])
        try:
            call(register=_register_callback(hook_name, make, plugin_name, found))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    return found


def _register_callback(
    hook_name: str, make: Callable[..., Entry], plugin_name: str, found: dict[str, Entry]
) -> Callable[..., None]:
    """The ``register`` callback one plugin receives: validates, de-duplicates, records the plugin."""

    def register(*args, **kwargs) -> None:
        try:
            entry = make(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"plugin {plugin_name!r} registered an invalid entry in {hook_name}: {exc}") from exc
        entry = dataclasses.replace(entry, plugin=plugin_name)
        previous = found.get(entry.name)
        if previous is not None and not _same(previous, entry):
            raise PluginError(
                f"{hook_name}: name {entry.name!r} is registered twice: by plugin {previous.plugin!r} "
                f"({_describe(previous)}) and by plugin {plugin_name!r} ({_describe(entry)})"
            )
        found[entry.name] = entry

    return register


#: An import path a registration may give instead of the object: dotted names, the last one the attribute.
_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _deferred(target: Any, name: str, check: Callable[[Any], None]) -> Registered:
    """An entry for ``target``: an object is checked now; an import path (``"pkg.module.Name"``) is
    checked for form now and imported and checked when first used (:attr:`Registered.obj`)."""
    if isinstance(target, str):
        if not _PATH.match(target):
            raise TypeError(f"{target!r} is not an import path (write 'package.module.Name')")
        return Registered(name, target, "", check=check)
    check(target)
    return Registered(name, target, "")


def _check_model(cls) -> None:
    # The one import cycle left in recsys, on purpose (tests/test_import_graph.py): validating a
    # model class needs RecModule, and RecModule.__init__ resolves its metric names here.
    from recsys.models.base import RecModule

    if not (inspect.isclass(cls) and issubclass(cls, RecModule)):
        raise TypeError(f"register_models expects a subclass of recsys.RecModule, got {cls!r}")
    if "num_items" not in inspect.signature(cls.__init__).parameters:
        raise TypeError(f"{_where(cls)}.__init__ must accept `num_items` (it is linked from the data)")


def _class_named(name: str, check: Callable[[Any], None]) -> Callable[[Any], None]:
    """``check``, plus: the class a path names is called ``name`` (configs select it by that name)."""

    def check_named(cls) -> None:
        check(cls)
        if cls.__name__ != name:
            raise TypeError(f"the class is named {cls.__name__!r}; register a path ending in its own name")

    return check_named


def _named_callable(kind: str) -> Callable[..., Registered]:
    def make(name: str, fn: Any) -> Registered:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")

        def check(value) -> None:
            if not callable(value):
                raise TypeError(f"{kind} {name!r} must be callable, got {value!r}")

        return _deferred(fn, name, check)

    return make


def _metric(name: str, fn: Any, kind: str = "rank") -> Registered:
    """``register(name, fn)`` for a rank metric, ``register(name, fn, kind="list")`` for one
    computed on the recommended lists (see :mod:`recsys.metrics`); ``fn`` may be an import path."""
    if kind not in ("rank", "list"):
        raise TypeError(f"metric {name!r}: kind must be 'rank' or 'list', got {kind!r}")
    entry = _named_callable("metric")(name, fn)
    return dataclasses.replace(entry, extra={"kind": kind})


def _subclass_of(module: str, base: str, hook: str) -> Callable[[Any], None]:
    """The check that a registered class subclasses ``module.base`` (``recsys.Grounder``,
    ``recsys.Reranker``), without importing ``module`` (it imports torch and the data layer): a
    subclass cannot exist before that module has been imported, so it is looked up there."""

    def check(cls) -> None:
        parent = getattr(sys.modules.get(module), base, None)
        if parent is None or not (inspect.isclass(cls) and issubclass(cls, parent)):
            raise TypeError(f"{hook} expects a subclass of recsys.{base}, got {cls!r}")

    return check


def _class_entry(check: Callable[[Any], None]) -> Callable[[Any], Registered]:
    """``register(Cls)`` or ``register("package.module.Cls")``: the name is the class name."""

    def make(cls: Any) -> Registered:
        if isinstance(cls, str):
            name = cls.rpartition(".")[2]
            return _deferred(cls, name, _class_named(name, check))
        return _deferred(cls, getattr(cls, "__name__", repr(cls)), check)

    return make


def _backbone(
    name: str,
    hub_id: str | None,
    local: Callable[[], dict | None] | None = None,
    build: Callable[[], tuple] | None = None,
    install: str | None = None,
) -> BackboneSource:
    if not isinstance(name, str) or not name:
        raise TypeError(f"backbone name must be a non-empty string, got {name!r}")
    if local is not None and not callable(local):
        raise TypeError(f"backbone {name!r}: local must be a callable returning from_pretrained kwargs or None")
    if build is not None and not callable(build):
        raise TypeError(f"backbone {name!r}: build must be a callable returning (config, tokenizer)")
    if hub_id is None and build is None:
        raise TypeError(f"backbone {name!r}: give a hub id, or build= for a randomly initialised model")
    return BackboneSource(name, hub_id, local=local, build=build, install=install)


def _item_template(name: str, fn: Callable, dataset: str | None = None) -> Registered:
    entry = _named_callable("item template")(name, fn)
    if "@" in name:
        raise TypeError(f"item template name {name!r} must not contain '@'")
    return entry if dataset is None else dataclasses.replace(entry, name=f"{name}@{dataset}")


#: How each registration hook's ``register(...)`` call is validated.
_MAKERS: dict[str, Callable[..., Entry]] = {
    "register_models": _class_entry(_check_model),
    "register_datasets": _named_callable("dataset converter"),
    "register_metrics": _metric,
    "register_grounders": _class_entry(_subclass_of("recsys.grounding", "Grounder", "register_grounders")),
    "register_rerankers": _class_entry(_subclass_of("recsys.rerankers", "Reranker", "register_rerankers")),
    "register_backbones": _backbone,
    "register_item_templates": _item_template,
}


def check_registrations(plugin_name: str) -> None:
    """Run one plugin's registration hooks with validation, raising on anything invalid or on a
    name another loaded plugin registered already (used when the plugin is loaded, so a bad
    plugin is skipped rather than breaking lookups for everyone later). What it registers by
    import path is imported and checked only under ``RECSYS_STRICT_PLUGINS`` (plugin authors'
    CI); otherwise at first use, so loading stays cheap."""
    for hook_name, make in _MAKERS.items():
        mine = _collect(hook_name, make, only=plugin_name)
        if _strict():
            for entry in mine.values():
                _ = entry.obj  # imports and checks a path registration
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        if any(impl.plugin_name == plugin_name for impl in impls):
            _collect(hook_name, make)  # every loaded plugin's registrations: a clash names both


def import_models() -> None:
    """Import every registered class a config selects by short name (models, and the rerankers and
    grounders nested in them; those registered by import path too), so LightningCLI can resolve
    ``--model Rerank --model.reranker FIRST``. One that cannot be imported is skipped with one line
    on stderr naming it and its plugin (an error under ``RECSYS_STRICT_PLUGINS``)."""
    unimportable.clear()
    for kind, registry in (("model", get_models), ("reranker", get_rerankers), ("grounder", get_grounders)):
        for name, entry in registry().items():
            try:
                _ = entry.obj  # the import is the point
            except PluginError as exc:
                if _strict():
                    raise
                print(f"recsys: skipped {kind} {name!r}: {exc}", file=sys.stderr)
                if kind == "model":
                    unimportable[name] = str(exc)


#: Registered models :func:`import_models` could not import: name -> why (for the CLI's errors).
unimportable: dict[str, str] = {}


def get_models() -> dict[str, Registered]:
    """Model classes by class name."""
    return cast("dict[str, Registered]", _collect("register_models", _MAKERS["register_models"]))


class MetricFunctions(Mapping[str, Callable]):
    """The registered metric functions by name, each imported (when registered by path) only when
    read: a model resolves the metrics it logs, and a broken path in a plugin breaks only the
    runs that name its metric."""

    def __init__(self, entries: Mapping[str, Registered]):
        self.entries = entries

    def __getitem__(self, name: str) -> Callable:
        return self.entries[name].obj

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def get_datasets() -> dict[str, Registered]:
    """Raw-data converters by dataset-format name."""
    return cast("dict[str, Registered]", _collect("register_datasets", _MAKERS["register_datasets"]))


def get_metrics() -> dict[str, Registered]:
    """Ranking metric functions by name (``hit``, ``ndcg``, ...)."""
    return cast("dict[str, Registered]", _collect("register_metrics", _MAKERS["register_metrics"]))


def get_grounders() -> dict[str, Registered]:
    """Grounder classes by class name."""
    return cast("dict[str, Registered]", _collect("register_grounders", _MAKERS["register_grounders"]))


def get_rerankers() -> dict[str, Registered]:
    """Reranker classes by class name."""
    return cast("dict[str, Registered]", _collect("register_rerankers", _MAKERS["register_rerankers"]))


def get_backbones() -> dict[str, BackboneSource]:
    """Named LLM sources by name (:class:`BackboneSource`)."""
    return cast("dict[str, BackboneSource]", _collect("register_backbones", _MAKERS["register_backbones"]))


def get_item_templates() -> dict[str, Registered]:
    """Item text templates by name; ``name@dataset`` keys are dataset-specific overrides."""
    return cast("dict[str, Registered]", _collect("register_item_templates", _MAKERS["register_item_templates"]))


def item_to_text(item: dict, dataset: str) -> str:
    """The text an LLM sees for one item row (first plugin answer wins; the default is last)."""
    load_plugins()
    text = pm.hook.item_to_text(item=item, dataset=dataset)
    return "" if text is None else text
