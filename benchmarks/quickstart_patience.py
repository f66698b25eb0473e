"""How long must the Quick start (`make run`: SASRec on MovieLens-100k) train? Early-stopping
patience chosen on validation, with the test score of what each patience would select.

For each seed, one run of ``configs/ml-100k/sasrec.yaml`` with the widest patience considered,
keeping a checkpoint of every epoch. Its per-epoch validation NDCG@10 says, for every smaller
patience p, where training would have stopped (p epochs without a new best) and which epoch it
would have selected: the same numbers a run with patience p gives, since the runs are
deterministic up to the stop. Only then is each selected checkpoint tested.

    python benchmarks/quickstart_patience.py --seeds 42 0 1 2 --out benchmarks/results/quickstart_patience.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/ml-100k/sasrec.yaml"
MONITOR = "val/ndcg@10"


def callbacks_config(folder: Path, patience: int) -> Path:
    """The default callbacks, but every epoch's checkpoint is kept."""
    path = folder / "keep-every-epoch.yaml"
    path.write_text(json.dumps({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"monitor": MONITOR, "mode": "max", "save_top_k": -1, "filename": "epoch-{epoch}",
                       "auto_insert_metric_name": False}},
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
         "init_args": {"monitor": MONITOR, "mode": "max", "patience": patience}}]}}))
    return path


def stop_and_select(curve: list[float], patience: int) -> tuple[int, int]:
    """(epochs run, selected epoch) of early stopping with ``patience`` on a validation curve."""
    best, best_epoch = float("-inf"), 0
    for epoch, value in enumerate(curve):
        if value > best:
            best, best_epoch = value, epoch
        elif epoch - best_epoch >= patience:
            return epoch + 1, best_epoch
    return len(curve), best_epoch


def run_seed(seed: int, folder: Path, widest: int) -> dict:
    """One seed's run (skipped when a finished one is in ``folder``: seeds may run in parallel
    processes with ``--fit-only``, then one call reads them all)."""
    root = folder / f"seed-{seed}"
    done = root / "done.json"
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "recsys.cli", "fit", "--config", str(CONFIG),
                        "--config", str(callbacks_config(folder, widest)), f"--seed_everything={seed}",
                        f"--trainer.default_root_dir={root}", "--test_after_fit=false"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        done.write_text(json.dumps({"fit_s": time.perf_counter() - start}))
    fit_s = json.loads(done.read_text())["fit_s"]
    log = next(root.glob("lightning_logs/version_*"))
    frame = pd.read_csv(log / "metrics.csv")
    curve = frame.dropna(subset=[MONITOR]).sort_values("epoch")[MONITOR].tolist()
    return {"seed": seed, "fit_s": fit_s, "epochs": len(curve), "curve": curve, "checkpoints": str(log / "checkpoints")}


def test_score(checkpoint: Path, folder: Path) -> float:
    subprocess.run([sys.executable, "-m", "recsys.cli", "test", "--config", str(CONFIG), f"--ckpt_path={checkpoint}",
                    f"--trainer.default_root_dir={folder}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    newest = max(folder.glob("lightning_logs/version_*/results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())["metrics"]["test/ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1, 2])
    parser.add_argument("--patience", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    parser.add_argument("--work", type=Path, default=Path("/tmp/quickstart_patience"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quickstart_patience.json")
    parser.add_argument("--fit-only", action="store_true", help="train the seeds' runs, analyse nothing")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs = [run_seed(seed, args.work, max(args.patience)) for seed in args.seeds]
    if args.fit_only:
        return
    rows = []
    for p in sorted(args.patience):
        per_seed = []
        for run in runs:
            epochs, selected = stop_and_select(run["curve"], p)
            checkpoint = Path(run["checkpoints"]) / f"epoch-{selected}.ckpt"
            per_seed.append({"seed": run["seed"], "epochs_run": epochs, "selected_epoch": selected,
                             "val_ndcg@10": run["curve"][selected],
                             "test_ndcg@10": test_score(checkpoint, args.work / f"test-{run['seed']}-{selected}")})
        rows.append({"patience": p, "runs": per_seed,
                     **{f"mean_{k}": statistics.mean(r[k] for r in per_seed)
                        for k in ("epochs_run", "val_ndcg@10", "test_ndcg@10")}})
    per_epoch = statistics.mean(run["fit_s"] / run["epochs"] for run in runs)  # shared machine: indicative only
    print(f"{'patience':>8} {'epochs run':>10} {'val ndcg@10':>11} {'test ndcg@10':>12}")
    for row in rows:
        print(f"{row['patience']:>8} {row['mean_epochs_run']:>10.1f} {row['mean_val_ndcg@10']:>11.4f} "
              f"{row['mean_test_ndcg@10']:>12.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "config": str(CONFIG.relative_to(ROOT)),
                                    "seconds_per_epoch_incl_validation": per_epoch, "runs": runs, "patience": rows},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
