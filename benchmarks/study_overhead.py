"""What `recsys study` costs on top of the runs it launches (issue 18's bars).

1. Runner overhead: `recsys study run studies/overhead-ml-100k.yaml` (Pop + SASRec x 3 seeds on
   MovieLens-100k, one worker) against the sum of its runs' own wall-clock (each `recsys fit`
   process, start to exit, as run.json records it). Bar: <= 1.1x.
2. Report time over 100 finished runs: a synthetic study output (10 models x 10 seeds, 943 test
   users each, ranks drawn at random; record.json files with 20 epochs each) reported by
   `write_report`. Bar: <= 10 s.

    python benchmarks/study_overhead.py            # both; writes benchmarks/results/study_overhead.json
    python benchmarks/study_overhead.py --skip-run # only the report timing
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "study_overhead.json"
STUDY = ROOT / "studies" / "overhead-ml-100k.yaml"


def runner_overhead(output: Path) -> dict:
    from recsys.study.records import read_json

    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recsys.cli", "study", "run", str(STUDY), "--output", str(output)],
                   cwd=ROOT, check=True)
    study_s = time.perf_counter() - start
    runs = [read_json(p) or {} for p in sorted(output.glob("runs/*/*/*/run.json"))]
    records = [read_json(p) or {} for p in sorted(output.glob("runs/*/*/*/record.json"))]
    runs_s = sum(r["wall_s"] for r in runs)
    fit_s = sum(r.get("fit_s", 0) + r.get("test_s", 0) for r in records)
    return {"study_s": study_s, "runs": len(runs), "runs_wall_s": runs_s, "ratio": study_s / runs_s,
            "in_process_fit_and_test_s": fit_s,
            "per_run": [{"model": r["model"], "seed": r["seed"], "wall_s": r["wall_s"]} for r in runs]}


def fake_study(output: Path, models: int = 10, seeds: int = 10, users: int = 943, epochs: int = 20) -> Path:
    """A study file and an output folder holding models x seeds finished runs."""
    from recsys.study.records import write_json, write_ranks

    rng = np.random.default_rng(0)
    names = [f"M{i}" for i in range(models)]
    config = "configs/ml-100k/pop.yaml"
    study = output / "fake.yaml"
    study.write_text(json.dumps({
        "name": "fake", "datasets": {"ml-100k": {"path": "ml-100k"}},
        "models": {n: {"config": str(ROOT / config)} for n in names}, "budget": {"trials": 0, "seeds": seeds},
        "reference": names[0], "report": {"metrics": ["hit", "ndcg", "mrr"], "cutoffs": [5, 10, 20]}}))
    for m, name in enumerate(names):
        for seed in range(seeds):
            run_dir = output / "runs" / "ml-100k" / name / f"seed-{seed}"
            run_dir.mkdir(parents=True)
            ranks = rng.geometric(0.02 + 0.002 * m, users).clip(1, 1682)
            write_ranks(run_dir / "ranks.csv", pd.DataFrame({"window": np.arange(users), "user": np.arange(users) + 1,
                                                             "rank": ranks, "cold": False}))
            curve = [{"epoch": e, "train_s": 8.0, "elapsed_s": 9.0 * (e + 1),
                      "val": {"val/ndcg@10": float(0.05 + 0.003 * e + 0.001 * m)}} for e in range(epochs)]
            write_json(run_dir / "record.json", {
                "epochs": curve, "best_epoch": epochs - 3, "best_score": curve[-3]["val"]["val/ndcg@10"],
                "seconds_to_best": 9.0 * (epochs - 2), "train_s_per_epoch": 8.0, "test_s": 2.0, "max_epochs": 200,
                "epochs_run": epochs, "params_total": 100_000, "params_trainable": 100_000, "peak_rss_mb": 900.0,
                "split_hash": "same", "test": {}, "data": {"protocol": "loo"}})
            write_json(run_dir / "run.json", {"dataset": "ml-100k", "model": name, "phase": "seed", "slot": seed,
                                              "seed": seed, "status": "done", "wall_s": 200.0})
    return study


def report_time() -> dict:
    from recsys.study.report import write_report
    from recsys.study.spec import load_study

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp)
        study = fake_study(output)
        spec = load_study(study, ROOT, output)
        start = time.perf_counter()
        write_report(spec)
        seconds = time.perf_counter() - start
    return {"runs": 100, "users_per_run": 943, "report_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-run", action="store_true", help="only time the report")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "studies" / "overhead-ml-100k")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {**previous, "report": report_time()}
    if not args.skip_run:
        result["runner"] = runner_overhead(args.output)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"{'measure':<44} {'value':>10} {'bar':>8}")
    if "runner" in result:
        r = result["runner"]
        print(f"{'study wall / sum of its runs wall (' + str(r['runs']) + ' runs)':<44} {r['ratio']:>10.3f} {'<= 1.1':>8}")
        print(f"{'  study s, runs s':<44} {r['study_s']:>5.0f} {r['runs_wall_s']:>5.0f}")
    print(f"{'report over 100 runs (s)':<44} {result['report']['report_s']:>10.2f} {'<= 10':>8}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
