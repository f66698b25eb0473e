#!/usr/bin/env python3
"""Bad input: run every case of ``tests/test_bad_input.py`` and count the clear outcomes.

A case is a broken input for one converter (MovieLens 100k/1M/latest, Amazon 2014/2018/2023,
generic CSV), for the atomic-file loader, or a broken run configuration. It is *clear* when:

- it should fail: our exception type (``DataFormatError``), or ``recsys`` exits non-zero with
  one ``recsys: error: ...`` line and no traceback, and the message contains the fragments the
  table names (the file, and the line or field);
- skipping is the documented behaviour (duplicates, items without text, short histories):
  the run succeeds and one log record counts what was skipped.

Anything else (an exception escaping from pandas/torch, a traceback, a message that does not
name the file/line/field, a silent success) counts as not clear. Prints one row per case and
``N cases tried, M clear errors``; writes ``benchmarks/results/reliability_bad_input.json``.

Usage::

    python benchmarks/reliability_bad_input.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability_bad_input.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", help="run the cases whose id starts with this")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests"))
    from test_bad_input import CASES, run_case  # the same table the test suite runs

    cases = [c for c in CASES if not args.only or c.id.startswith(args.only)]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recsys-bad-input-") as tmp:
        for number, case in enumerate(cases):
            work = Path(tmp) / str(number)
            work.mkdir()
            outcome = run_case(case, work)
            detail = outcome.detail.replace(str(work) + os.sep, "")
            rows.append({"case": case.id, "expected": "counted skip" if case.skip else "error",
                         "clear": outcome.clear, "message": detail})
            mark = "ok " if outcome.clear else "NOT CLEAR"
            print(f"{mark:9s} {case.id:55s} {detail[:150]}", flush=True)
    seconds = time.perf_counter() - started

    clear = sum(r["clear"] for r in rows)
    errors = [r for r in rows if r["expected"] == "error"]
    skips = [r for r in rows if r["expected"] != "error"]
    by_target = Counter(r["case"].split("/")[0] for r in rows)
    clear_by_target = Counter(r["case"].split("/")[0] for r in rows if r["clear"])
    print()
    print(f"{'target':14s} {'cases':>6s} {'clear':>6s}")
    for target in by_target:
        print(f"{target:14s} {by_target[target]:6d} {clear_by_target[target]:6d}")
    print(f"\n{len(rows)} cases tried, {clear} clear errors "
          f"({sum(r['clear'] for r in errors)} of {len(errors)} errors named file/line/field in one line, "
          f"{sum(r['clear'] for r in skips)} of {len(skips)} documented skips counted in the log); {seconds:.0f}s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({
        "cases": len(rows), "clear": clear,
        "errors": len(errors), "clear_errors": sum(r["clear"] for r in errors),
        "skips": len(skips), "counted_skips": sum(r["clear"] for r in skips),
        "by_target": {t: {"cases": by_target[t], "clear": clear_by_target[t]} for t in by_target},
        "rows": rows,
    }, indent=2) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
