"""The ``recsys`` command.

``recsys fit|validate|test|predict`` is a LightningCLI (``recsys.lightning_cli``): a run is a
YAML of ``class_path`` + ``init_args`` (``--print_config`` shows everything a run used).
``recsys plugins|models|datasets|backbones|convert`` are small tools over the plugin registry;
``recsys plugin new NAME`` writes a new plugin package (``recsys.scaffold``).
Heavy imports (torch, Lightning) happen only in the commands that need them, so ``recsys
--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable


# ---- tools over the registry -------------------------------------------------------------


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def cmd_plugins(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recsys plugins", description="Installed plugins as JSON.")
    parser.add_argument("--all", action="store_true", help="include the built-in default plugins")
    parser.add_argument("--hook", help="only plugins implementing this hook")
    args = parser.parse_args(argv)
    from recsys.plugins import get_plugins

    _print_json(get_plugins(all=args.all, hook=args.hook))
    return 0


def cmd_models(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="recsys models", description="Registered models as JSON.").parse_args(argv)
    from recsys.plugins import get_models

    _print_json(
        [{"name": name, "class_path": e.path, "plugin": e.plugin}
         for name, e in sorted(get_models().items())]
    )
    return 0


def cmd_datasets(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="recsys datasets", description="Registered raw-data converters.").parse_args(argv)
    from recsys.plugins import get_datasets

    _print_json(
        [{"name": name, "converter": e.path, "plugin": e.plugin, **_doc(e)}
         for name, e in sorted(get_datasets().items())]
    )
    return 0


def _first_line(obj) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ and obj.__doc__.strip() else ""


def _doc(entry) -> dict[str, str]:
    """``{"doc": first docstring line}`` of a registered object, or ``{"error": ...}`` when its
    import path cannot be imported (that entry is shown broken; the others are still listed)."""
    from recsys.plugins import PluginError

    try:
        return {"doc": _first_line(entry.obj)}
    except PluginError as exc:
        return {"error": str(exc)}


def cmd_metrics(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="recsys metrics", description="Registered metrics as JSON (names for "
                            "model.init_args.metrics, e.g. ndcg, ndcg@10, mrr@all).").parse_args(argv)
    from recsys.plugins import get_metrics

    _print_json(
        [{"name": name, "function": e.path, "plugin": e.plugin, **_doc(e)}
         for name, e in sorted(get_metrics().items())]
    )
    return 0


def cmd_backbones(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="recsys backbones",
        description="Named LLM backbones as JSON: where each loads from, and whether an offline copy is here.")
    parser.add_argument("--prepare", metavar="NAME", help="load NAME once (converting a packaged GGUF copy "
                        "into the cache), so later runs start fast")
    args = parser.parse_args(argv)
    from recsys.llm.backbones import BackboneUnavailable
    from recsys.plugins import get_backbones

    if args.prepare:
        from recsys.llm.backbones import load_backbone

        try:
            source = load_backbone(args.prepare).source
        except BackboneUnavailable as exc:
            print(f"recsys: error: {exc}", file=sys.stderr)
            return 2
        _print_json(source)
        return 0
    rows = []
    for name, e in sorted(get_backbones().items()):
        offline = e.build is not None or (e.local is not None and e.local() is not None)
        kind = "random (built in memory)" if e.build else ("packaged" if offline else "hub")
        rows.append({"name": name, "hub_id": e.hub_id, "source": kind, "offline_copy": offline,
                     "install": e.install, "plugin": e.plugin})
    _print_json(rows)
    return 0


def cmd_convert(argv: list[str]) -> int:
    from recsys.plugins import get_datasets

    converters = get_datasets()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: recsys convert NAME RAW OUT [options]   (recsys convert NAME --help for options)\n")
        print("Turns raw files into RecBole atomic files. Converters:")
        for name, e in sorted(converters.items()):
            shown = _doc(e)
            print(f"  {name:14s} {shown.get('doc', '(broken: ' + shown.get('error', '') + ')')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in converters:
        print(f"recsys convert: unknown dataset format {name!r}; available: {sorted(converters)}", file=sys.stderr)
        return 2
    from jsonargparse import CLI, ArgumentParser

    class ConvertParser(ArgumentParser):
        """An unknown or mistyped option is one ``recsys: error:`` line naming it, not a usage block."""

        def error(self, message: str, ex: Exception | None = None):
            if not self.exit_on_error or os.environ.get("RECSYS_DEBUG"):
                return super().error(message, ex)
            text = " ".join(line.strip() for line in message.splitlines() if line.strip())
            print(f"recsys: error: {text} (options: recsys convert {name} --help)", file=sys.stderr)
            self.exit(2)

    try:
        out = CLI(converters[name].obj, args=rest, prog=f"recsys convert {name}", parser_class=ConvertParser)
    except ValueError as exc:  # the converter's checks of its options (DataFormatError, a ValueError, names the file)
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    print(f"recsys: wrote {out}")
    return 0


def cmd_plugin(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recsys plugin", description="Tools for plugin authors.")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser(
        "new", help="write a plugin package (a model, a metric, contract tests) that passes its tests as it is",
        description="Write a plugin package into DIR/NAME: pyproject with the entry point, a model, a metric, "
                    "tests running recsys.testing's model contract, a README.")
    new.add_argument("name", metavar="NAME", help="distribution name, e.g. recsys-knn (package recsys_knn)")
    new.add_argument("--dir", default=".", help="where to create the NAME folder (default: here)")
    new.add_argument("--model", help="the model's class name (default: from NAME, e.g. Knn)")
    args = parser.parse_args(argv)
    from recsys.scaffold import names, new_plugin

    try:
        values = names(args.name, args.model)
    except ValueError as exc:
        parser.error(str(exc))
    root = new_plugin(args.name, args.dir, args.model)
    print(f"recsys: wrote {root} (model {values['model']}, metric {values['metric']}). Next:\n"
          f"  cd {root} && pip install -e . && pytest    # then: recsys fit --model {values['model']} ...")
    return 0


def cmd_study(argv: list[str]) -> int:
    from recsys.study.cli import main as study_main

    return study_main(argv)


def cmd_embed_items(argv: list[str]) -> int:
    """``recsys embed-items``: a ``predict`` run writing item text embeddings as resumable shards."""
    from lightning.pytorch.cli import LightningCLI

    from recsys.lightning_cli import RecsysArgumentParser
    from recsys.plugins import load_plugins
    from recsys.shards import ItemShardDataModule, ShardWriter, TextItemEmbedder

    class EmbedItemsCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ShardWriter, "writer")
            parser.link_arguments("data.shard_dir", "writer.shard_dir")

    load_plugins()
    if any(a in ("-h", "--help") for a in argv):
        print("usage: recsys embed-items --data.shard_dir DIR --data.path DATASET [--model.backbone NAME] ...\n"
              "Embeds every item's text (a predict run) into DIR as fixed-size .npy shards + manifest.json;\n"
              "run it again to resume after a crash. ItemIndex.from_shards(DIR) serves them.\n")
    cli = EmbedItemsCLI(TextItemEmbedder, ItemShardDataModule, args=["predict", *argv], run=True,
                        parser_class=RecsysArgumentParser, save_config_callback=None,
                        trainer_defaults={"logger": False})
    if not any(a in ("-h", "--help", "--print_config") for a in argv):
        print(f"recsys: wrote {cli.datamodule.shard_dir}")
    return 0


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "plugin": cmd_plugin,
    "plugins": cmd_plugins,
    "models": cmd_models,
    "datasets": cmd_datasets,
    "metrics": cmd_metrics,
    "backbones": cmd_backbones,
    "convert": cmd_convert,
    "embed-items": cmd_embed_items,
    "study": cmd_study,
}

USAGE = """usage: recsys COMMAND [options]

Train and evaluate (LightningCLI; `recsys fit --help`, `--print_config`, `--model.help NAME`):
  fit        train, then validate and test the best checkpoint
  validate   evaluate on the validation targets
  test       evaluate on the test targets
  predict    write each user's top-K next items (--predictions.path out.csv|out.jsonl)

Plugins and data:
  plugins    installed plugins as JSON (--all includes built-ins)
  models     registered models
  datasets   registered raw-data converters
  metrics    registered metrics (names for model.init_args.metrics)
  backbones  named LLM backbones
  convert    raw files -> RecBole atomic files (recsys convert NAME RAW OUT)
  embed-items  item text embeddings as resumable .npy shards (--data.shard_dir DIR --data.path DATA)
  plugin     for plugin authors: `recsys plugin new NAME` writes a package that passes its tests

Compare models fairly (equal tuning budget, seeds, paired tests, cost; docs/studies.md):
  study      recsys study run|status|report STUDY.yaml [--jobs N]

Example: recsys fit --config configs/ml-100k/sasrec.yaml
Errors in data or configuration print one line; RECSYS_DEBUG=1 shows the traceback.
"""


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that describe bad input or configuration: printed as one line, no traceback."""
    from recsys.data.atomic import DataFormatError
    from recsys.plugins import PluginError

    errors: tuple[type[Exception], ...] = (DataFormatError, PluginError, FileNotFoundError, FileExistsError)
    if "recsys.metrics" in sys.modules:
        errors += (sys.modules["recsys.metrics"].MetricError,)
    if "recsys.lightning_cli" in sys.modules:
        errors += (sys.modules["recsys.lightning_cli"].ConfigError,)
    if "recsys.study.spec" in sys.modules:
        errors += (sys.modules["recsys.study.spec"].StudyError,)
    return errors


def _end_process_group() -> None:
    """Shut a distributed run's process group down before the interpreter exits: left to exit,
    a gloo worker thread can still be running and abort the process ("terminate called without
    an active exception") after the run itself succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        if args[0] in TOOLS:
            return TOOLS[args[0]](args[1:])
        from recsys.lightning_cli import run_cli

        run_cli(argv)  # None: LightningCLI reads sys.argv itself (and does not warn about it)
        _end_process_group()
        return 0
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:
        import pickle

        if os.environ.get("RECSYS_DEBUG"):
            raise
        if isinstance(exc, pickle.UnpicklingError):  # torch.load(weights_only=True) refused a file
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            reason = next((line for line in lines if "global" in line.lower()), lines[0])  # what it refused
            print(f"recsys: error: refused to load a checkpoint holding more than tensors and plain values "
                  f"(weights_only=True; only load checkpoints you trust with weights_only=False): {reason}", file=sys.stderr)
            return 2
        if not isinstance(exc, _user_errors()):
            raise
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
