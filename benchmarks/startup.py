"""Start-up time of the `recsys` listing commands, beside the floors they are compared with.

Each command runs ``--repeats`` times in a fresh interpreter, interleaved (one round runs every
command once), so machine noise hits all of them alike; the table gives the median wall time
and its ratio to importing torch + Lightning (what listing cost before registrations by import
path: loading a plugin imported its models). Every installed plugin loads, as for a user.

    python benchmarks/startup.py --repeats 7 --out benchmarks/results/startup.json

The issue's target: ``recsys plugins`` and ``recsys models`` within 1 s on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent

#: label -> command line (in a fresh interpreter each time)
COMMANDS = {
    "python (empty)": [sys.executable, "-c", "pass"],
    "recsys --help": [str(BIN / "recsys"), "--help"],
    "recsys plugins": [str(BIN / "recsys"), "plugins"],
    "recsys models": [str(BIN / "recsys"), "models"],
    "recsys metrics": [str(BIN / "recsys"), "metrics"],
    "import torch + lightning": [sys.executable, "-c", "import torch, lightning.pytorch"],
}
REFERENCE = "import torch + lightning"
TARGET_SECONDS = 1.0


def time_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    env_load = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for label, command in COMMANDS.items():  # warm the file cache once, untimed
        time_once(command)
    for _ in range(args.repeats):
        for label, command in COMMANDS.items():
            times[label].append(time_once(command))
    reference = statistics.median(times[REFERENCE])
    rows = []
    print(f"{'command':26s} {'median s':>9s} {'min s':>7s} {'x torch+lightning':>18s}")
    for label, values in times.items():
        median = statistics.median(values)
        rows.append({"command": label, "median_s": round(median, 4), "min_s": round(min(values), 4),
                     "ratio_to_torch_lightning": round(median / reference, 4), "runs_s": [round(v, 4) for v in values]})
        print(f"{label:26s} {median:9.3f} {min(values):7.3f} {median / reference:18.3f}")
    listing = [r for r in rows if r["command"] in ("recsys plugins", "recsys models")]
    met = all(r["median_s"] <= TARGET_SECONDS for r in listing)
    print(f"target: recsys plugins and recsys models <= {TARGET_SECONDS} s: {'met' if met else 'NOT met'}")
    if args.out:
        args.out.write_text(json.dumps({
            "repeats": args.repeats, "load_average_before": env_load, "cpu_count": os.cpu_count(),
            "target_s": TARGET_SECONDS, "target_met": met, "rows": rows,
        }, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
