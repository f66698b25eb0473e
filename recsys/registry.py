"""What plugins registered: models, dataset converters, metrics, grounders, backbones.

Registration hooks are called lazily at every lookup (no cache), one implementation at a
time, so late registration from tests or notebooks just works and every entry records the
plugin that made it. Duplicate names are errors naming both registrants.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from recsys.plugins import PluginError, load_plugins, pm


@dataclass(frozen=True)
class Registered:
    """One registered thing: its name, the object, and the plugin that registered it."""

    name: str
    obj: Any
    plugin: str
    extra: dict = field(default_factory=dict)


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}"


def _collect(hook_name: str, make: Callable[..., Registered], only: str | None = None) -> dict[str, Registered]:
    """Call every implementation of a ``register_*`` hook and collect what it registers.

    ``make(*args, **kwargs)`` turns one ``register(...)`` call into a :class:`Registered`
    (validating it); the plugin name is filled in here. ``only`` limits the call to one plugin.
    """
    if only is None:
        load_plugins()
    found: dict[str, Registered] = {}
    caller = getattr(pm.hook, hook_name)
    # pluggy calls implementations last-registered first; keep that order.
    for impl in reversed(caller.get_hookimpls()):
        plugin_name = impl.plugin_name
        if only is not None and plugin_name != only:
            continue
        try:
            impl.function(register=_register_callback(hook_name, make, plugin_name, found))
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    return found


def _register_callback(
    hook_name: str, make: Callable[..., Registered], plugin_name: str, found: dict[str, Registered]
) -> Callable[..., None]:
    """The ``register`` callback one plugin receives: validates, de-duplicates, records the plugin."""

    def register(*args, **kwargs) -> None:
        try:
            entry = make(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"plugin {plugin_name!r} registered an invalid entry in {hook_name}: {exc}") from exc
        entry = Registered(entry.name, entry.obj, plugin_name, entry.extra)
        previous = found.get(entry.name)
        if previous is not None and previous.obj is not entry.obj:
            raise PluginError(
                f"{hook_name}: name {entry.name!r} is registered twice: by plugin {previous.plugin!r} "
                f"({_where(previous.obj)}) and by plugin {plugin_name!r} ({_where(entry.obj)})"
            )
        found[entry.name] = entry

    return register


def _model(cls) -> Registered:
    from recsys.models.base import RecModule

    if not (inspect.isclass(cls) and issubclass(cls, RecModule)):
        raise TypeError(f"register_models expects a subclass of recsys.RecModule, got {cls!r}")
    if "num_items" not in inspect.signature(cls.__init__).parameters:
        raise TypeError(f"{_where(cls)}.__init__ must accept `num_items` (it is linked from the data)")
    return Registered(cls.__name__, cls, "")


def _named_callable(kind: str) -> Callable[..., Registered]:
    def make(name: str, fn: Callable) -> Registered:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")
        if not callable(fn):
            raise TypeError(f"{kind} {name!r} must be callable, got {fn!r}")
        return Registered(name, fn, "")

    return make


def _grounder(cls) -> Registered:
    from recsys.grounding import Grounder

    if not (inspect.isclass(cls) and issubclass(cls, Grounder)):
        raise TypeError(f"register_grounders expects a subclass of recsys.Grounder, got {cls!r}")
    return Registered(cls.__name__, cls, "")


def _backbone(
    name: str,
    hub_id: str | None,
    local: Callable[[], dict | None] | None = None,
    build: Callable[[], tuple] | None = None,
    install: str | None = None,
) -> Registered:
    if not isinstance(name, str) or not name:
        raise TypeError(f"backbone name must be a non-empty string, got {name!r}")
    if local is not None and not callable(local):
        raise TypeError(f"backbone {name!r}: local must be a callable returning from_pretrained kwargs or None")
    if build is not None and not callable(build):
        raise TypeError(f"backbone {name!r}: build must be a callable returning (config, tokenizer)")
    if hub_id is None and build is None:
        raise TypeError(f"backbone {name!r}: give a hub id, or build= for a randomly initialised model")
    return Registered(name, hub_id, "", {"local": local, "build": build, "install": install})


def _item_template(name: str, fn: Callable, dataset: str | None = None) -> Registered:
    entry = _named_callable("item template")(name, fn)
    if "@" in name:
        raise TypeError(f"item template name {name!r} must not contain '@'")
    return entry if dataset is None else Registered(f"{name}@{dataset}", fn, "")


#: How each registration hook's ``register(...)`` call is validated.
_MAKERS: dict[str, Callable[..., Registered]] = {
    "register_models": _model,
    "register_datasets": _named_callable("dataset converter"),
    "register_metrics": _named_callable("metric"),
    "register_grounders": _grounder,
    "register_backbones": _backbone,
    "register_item_templates": _item_template,
}


def check_registrations(plugin_name: str) -> None:
    """Run one plugin's registration hooks with validation, raising on anything invalid
    (used when the plugin is loaded, so a bad plugin is skipped rather than breaking lookups)."""
    for hook_name, make in _MAKERS.items():
        _collect(hook_name, make, only=plugin_name)


def get_models() -> dict[str, Registered]:
    """Model classes by class name."""
    return _collect("register_models", _MAKERS["register_models"])


def get_datasets() -> dict[str, Registered]:
    """Raw-data converters by dataset-format name."""
    return _collect("register_datasets", _MAKERS["register_datasets"])


def get_metrics() -> dict[str, Registered]:
    """Ranking metric functions by name (``hit``, ``ndcg``, ...)."""
    return _collect("register_metrics", _MAKERS["register_metrics"])


def get_grounders() -> dict[str, Registered]:
    """Grounder classes by class name."""
    return _collect("register_grounders", _MAKERS["register_grounders"])


def get_backbones() -> dict[str, Registered]:
    """Named LLM sources: ``obj`` is the hub id, ``extra['local']`` the offline locator,
    ``extra['build']`` the maker of a randomly initialised model (tiny test backbones)."""
    return _collect("register_backbones", _MAKERS["register_backbones"])


def get_item_templates() -> dict[str, Registered]:
    """Item text templates by name; ``name@dataset`` keys are dataset-specific overrides."""
    return _collect("register_item_templates", _MAKERS["register_item_templates"])


def item_to_text(item: dict, dataset: str) -> str:
    """The text an LLM sees for one item row (first plugin answer wins; the default is last)."""
    load_plugins()
    text = pm.hook.item_to_text(item=item, dataset=dataset)
    return "" if text is None else text
