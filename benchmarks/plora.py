#!/usr/bin/env python3
"""RecLoRA on MovieLens-100k under the CTR protocol: CRM alone, frozen LLM + head, shared LoRA
(peft), personalized LoRA (K = 4, 8) and personalized LoRA with a target-agnostic gate, for
N LLM training samples (Few2Many: the CRM always trains on every training sample).

Prints one table and writes ``benchmarks/results/plora.json`` after every run (``--skip-done``
reuses finished rows). Every row is ``recsys fit`` through the engine's CLI, in this process, so
the frozen bottom blocks' outputs (cached per sample) are computed once and shared by every LLM
row; ``train s`` is the wall time of fit (training + per-epoch validation), which for the
first LLM row includes filling that cache (reported separately as ``cache s``).

Protocol: every rating a sample, label = rating >= 4, history = earlier ratings, global-time
8:1:1 split, samples with < 5 history items dropped; model selection on validation AUC (the
checkpoint of the best epoch); the test metrics are of that checkpoint. Validation and test
use the same seeded samples for every row (``--val-samples``, ``--test-samples``; the CRM is
also tested on the full test split). Nothing is tuned on test.

CPU budget decisions (made before any LLM result was seen). SmolLM2-135M ran ~0.7 s per 64-token
prompt forward on one thread here, and the machine (2 cores shared by five sessions) gave about
4 GFLOP/s per thread, so the LLM is the "cheap" option of the reference: pretrained
all-MiniLM-L6-v2 (6 blocks, d = 384), mean pooling, linear head, a compact prompt (~70 tokens:
profile, 5 retrieved history titles with stars, target; the CRM sees 50 items); LoRA (r = 8,
alpha = 16, q/v) only in the top block, so the 5 frozen blocks below are computed once per sample;
2 epochs, batch 16, lr 1e-3; gate temperature 1; evaluation on 300 validation / 1,000 test
samples. ``--n`` runs any N; runs with different N may go in parallel processes (rows are merged
into the JSON under a file lock), e.g. ``--n 1000`` and ``--n 4000`` side by side. The SmolLM2
configuration (``plugins/recsys-plora/configs/ml-100k/plora.yaml``) is the same model with the Yes/No head.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/plora.py            # --skip-done to resume
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "plora.json"

VARIANTS = {
    "frozen LLM + head": ["--model.adapter=none"],
    "shared LoRA (peft)": ["--model.adapter=shared"],
    "personalized LoRA K=4": ["--model.adapter=personalized", "--model.num_loras=4"],
    "personalized LoRA K=8": ["--model.adapter=personalized", "--model.num_loras=8"],
    "personalized LoRA K=8, target-agnostic gate": ["--model.adapter=personalized", "--model.num_loras=8",
                                                    "--model.gate_input=target-agnostic"],
}


def cli_args(config: str, root: Path, data: list[str], model: list[str], epochs: int) -> list[str]:
    return [f"--config={ROOT / 'plugins' / 'recsys-plora' / 'configs' / 'ml-100k' / config}", *model, *data, "--seed_everything=42",
            "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=20"]


def run(name: str, args: list[str]) -> dict:
    """Build the run as ``recsys fit`` would, time fit, then validate and test the best
    validation checkpoint (test metrics are of that checkpoint)."""
    from recsys.lightning_cli import run_cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_cli(args, run=False)
        cached_before = _cache_size(cli.model)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        fit_s = time.perf_counter() - start
        best = cli.trainer.checkpoint_callback.best_model_path
        val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
        test = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    row = {"model": name, "train_s": fit_s, "epochs": cli.trainer.current_epoch, "best_checkpoint": best,
           "command": "recsys fit " + " ".join(args), **{k: float(v) for k, v in {**val, **test}.items()}}
    if cached_before is not None:  # RecLoRA: prompts not cached by an earlier row
        row["new_cached_prompts"] = _cache_size(cli.model) - cached_before
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 4000], help="LLM training samples")
    parser.add_argument("--val-samples", type=int, default=300)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="run only these rows")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-plora")
    parser.add_argument("--skip-done", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="print the table from the JSON and exit")
    args = parser.parse_args()
    if args.report_only:
        print_table(json.loads(RESULTS.read_text())["rows"], args)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    # The CRM's training is always reused when its checkpoint exists; LLM rows with --skip-done.
    done = {(r["model"], r.get("n")): r for r in previous if "test/auc" in r
            and (args.skip_done or r.get("n") is None) and r.get("test_samples", args.test_samples) == args.test_samples}
    rows: list[dict] = list(done.values())
    evaluation = [f"--data.val_samples={args.val_samples}", f"--data.test_samples={args.test_samples}",
                  "--data.sample_seed=0"]

    def record(row: dict) -> None:
        rows[:] = [r for r in rows if (r["model"], r.get("n")) != (row["model"], row.get("n"))] + [row]
        write(rows, args)
        print(f"done: {row['model']:<45} N={row.get('n')} test AUC {row.get('test/auc', float('nan')):.4f} "
              f"LogLoss {row.get('test/logloss', float('nan')):.4f} train {row.get('train_s') or 0:.0f} s", flush=True)

    crm = done.get(("CRM alone (DIN)", None))
    if crm is None or not Path(crm.get("best_checkpoint", "")).exists():
        crm = run("CRM alone (DIN)", cli_args("ctr-din.yaml", args.out / "crm", evaluation, [], 20))
        crm["n"] = None
    if crm.get("val_samples") != args.val_samples or crm.get("test_samples") != args.test_samples:
        crm.update(evaluate_crm(crm["best_checkpoint"], args))
        record(crm)
    ckpt = crm["best_checkpoint"]
    from recsys_plora.model import CACHE_SECONDS

    for n in args.n:
        for name, extra in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            if (name, n) in done:
                continue
            root = args.out / f"n{n}" / name.lower().replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
            data = [*evaluation, f"--data.train_samples={n}"]
            start_s = CACHE_SECONDS[0]
            row = run(name, cli_args("plora-minilm.yaml", root, data, [*extra, f"--model.crm_checkpoint={ckpt}"],
                                     args.epochs))
            row.update(n=n, cache_s=CACHE_SECONDS[0] - start_s,
                       val_samples=args.val_samples, test_samples=args.test_samples)
            record(row)
    print_table(rows, args)
    print(f"\nwrote {RESULTS}")


def evaluate_crm(checkpoint: str, args) -> dict:
    """The CRM's best checkpoint on the current validation/test samples, and on the full test split."""
    from lightning.pytorch import Trainer

    import recsys

    model = recsys.RecModule.load_from_checkpoint(checkpoint)
    out = {"val_samples": args.val_samples, "test_samples": args.test_samples}
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    for limit, prefix in ((args.test_samples, "test"), (None, "full_test")):
        dm = recsys.CTRDataModule(path="ml-100k", max_len=50, val_samples=args.val_samples, test_samples=limit,
                                  eval_batch_size=2048)
        if prefix == "test":
            out.update({k: float(v) for k, v in trainer.validate(model, datamodule=dm, verbose=False)[0].items()})
        result = trainer.test(model, datamodule=dm, verbose=False)[0]
        out[f"{prefix}/auc"], out[f"{prefix}/logloss"] = float(result["test/auc"]), float(result["test/logloss"])
    return out


def _cache_size(model) -> int | None:
    """Samples in the model's frozen-state cache (shared by the RecLoRA rows of this process);
    None for a model without one (the CRM)."""
    cache = getattr(model, "state_cache", None)
    return None if cache is None else len(cache)


def write(rows: list[dict], args) -> None:
    """Merge ``rows`` into the JSON (by model and N) under a lock: parallel runs keep each other's rows."""
    from filelock import FileLock

    RESULTS.parent.mkdir(exist_ok=True)
    with FileLock(str(RESULTS) + ".lock"):
        previous = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
        ours = {(r["model"], r.get("n")) for r in rows}
        merged = [r for r in previous if (r["model"], r.get("n")) not in ours] + rows
        RESULTS.write_text(json.dumps({"rows": merged, "threads_per_run": int(os.environ.get("OMP_NUM_THREADS", "1")),
                                       "val_samples": args.val_samples, "test_samples": args.test_samples,
                                       "epochs": args.epochs}, indent=2))
    rows[:] = [r for r in merged]


def print_table(rows: list[dict], args) -> None:
    def fmt(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    print(f"\nml-100k, CTR protocol (label rating >= 4, global-time 8:1:1, history >= 5); test = the same seeded "
          f"{args.test_samples} test samples for every row; best epoch by validation AUC on {args.val_samples} "
          f"validation samples\n")
    print(f"| {'model':<45} | {'N':>5} | {'test AUC':>8} | {'LogLoss':>8} | {'train s':>8} | {'cache s':>8} | "
          f"{'epochs':>6} |")
    print(f"|{'-' * 47}|{'-' * 6}:|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|{'-' * 7}:|")
    for r in sorted(rows, key=lambda r: (r.get("n") or 0, list(VARIANTS).index(r["model"]) if r["model"] in VARIANTS else -1)):
        n = "all" if r.get("n") is None else str(r["n"])
        print(f"| {r['model']:<45} | {n:>5} | {fmt(r.get('test/auc')):>8} | {fmt(r.get('test/logloss')):>8} | "
              f"{fmt(r.get('train_s'), '.0f'):>8} | {fmt(r.get('cache_s'), '.0f'):>8} | {r.get('epochs', '-'):>6} |")
    print("\ntrain s: wall time of fit (training + per-epoch validation). cache s: time spent computing "
          "prompts and the frozen blocks' states for samples not yet cached (shared by later rows in the "
          "same process), including the test samples after fit; the first LLM row of each N pays it, and "
          "its train s includes the training and validation part.")


if __name__ == "__main__":
    sys.exit(main())
