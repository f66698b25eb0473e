"""Checks across fields of a parsed run configuration, before any model or data is built.

A value that is wrong on its own (``data.max_len: 0``) is the class's ``__init__``'s to refuse.
A value that is wrong only beside another one (a window stride longer than the window, two
``max_len`` that differ) used to surface minutes later, after the data and an LLM had loaded,
as a traceback. The CLI calls :func:`config_problems` right after parsing and prints what it
finds as one ``recsys: error: ...`` line naming both fields.

Classes add their own checks with a ``config_problems(model, data)`` classmethod
(:meth:`recsys.RecModule.config_problems`, :meth:`recsys.RecDataModule.config_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys.lazy import object_at

#: Init arguments the CLI fills itself (linked from the data when the classes are built).
LINKED = frozenset({"num_items"})


def _class(section: Any) -> type | None:
    class_path = section.get("class_path") if hasattr(section, "get") else None
    if not class_path:
        return None
    try:
        return object_at(class_path)
    except ImportError:
        return None  # the parser reports an unknown class_path itself


def _init_args(section: Any) -> dict[str, Any]:
    init_args = section.get("init_args") if hasattr(section, "get") else None
    if init_args is None:
        return {}
    return dict(init_args.items()) if hasattr(init_args, "items") else dict(vars(init_args))


def shared_hyperparameters(model: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Init arguments the model and the data module both take, with different values.

    Lightning saves the hyper-parameters of both and refuses to log a name with two values
    (``RuntimeError: Error while merging hparams``) when training starts; say so up front."""
    return [
        f"model.init_args.{key} ({model[key]!r}) and data.init_args.{key} ({data[key]!r}) differ; "
        f"both are saved as the hyper-parameter {key!r}, which can have one value: set them equal"
        for key in sorted(set(model) & set(data) - LINKED)
        if model[key] != data[key]
    ]


def config_problems(config: Any) -> list[str]:
    """Problems of one subcommand's parsed configuration (its ``model`` and ``data`` sections),
    one message each; empty when there are none or the sections are not both there."""
    model_section, data_section = (config.get(key) if hasattr(config, "get") else None for key in ("model", "data"))
    model_class, data_class = _class(model_section), _class(data_section)
    if model_class is None or data_class is None:
        return []
    model, data = _init_args(model_section), _init_args(data_section)
    problems = shared_hyperparameters(model, data)
    for cls in (data_class, model_class):
        check = getattr(cls, "config_problems", None)
        if check is not None:
            problems += check(model, data)
    return problems
