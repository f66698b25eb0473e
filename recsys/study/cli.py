"""``recsys study run|status|report STUDY.yaml``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="recsys study", description="Fair comparisons: every model gets the same tuning budget, is selected "
        "on validation only, re-run with several seeds, and reported with intervals, paired tests and cost.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every slot not finished yet (resumable; workers may share a study)")
    run.add_argument("study", type=Path, help="a study file (YAML), e.g. studies/tiny.yaml")
    run.add_argument("--jobs", type=int, default=1, help="runs at a time in this process (default 1)")
    run.add_argument("--retry-failed", action="store_true", help="first queue again every run that failed "
                     "(same slot, same parameters: once its cause is fixed); otherwise a failed run counts as done")
    status = commands.add_parser("status", help="finished / running / budget slots per dataset, model and phase")
    status.add_argument("study", type=Path)
    status.add_argument("--json", action="store_true", help="print JSON rows")
    report = commands.add_parser("report", help="tables and plots: Markdown, CSV, PNG and one HTML page")
    report.add_argument("study", type=Path)
    report.add_argument("--out", type=Path, help="output folder (default: <study output>/report)")
    for sub in (run, status, report):
        sub.add_argument("--root", type=Path, default=Path.cwd(),
                         help="the folder the study's relative paths start from (default: here)")
        sub.add_argument("--output", type=Path, help="where runs, the database and the report go "
                         "(default: the study's `output`, else runs/studies/<name>)")
    for sub in (run, status):
        sub.add_argument("--models", help="only these models of the study, comma-separated, run in this order "
                         "(the budget and the records stay the study's: the rest resume later)")
    args = parser.parse_args(argv)
    if args.command == "run" and args.jobs < 1:
        run.error(f"--jobs must be >= 1, got {args.jobs}")

    from recsys.study.spec import load_study

    spec = load_study(args.study, args.root, args.output)
    if getattr(args, "models", None):
        from recsys.study.spec import only_models

        spec = only_models(spec, args.models.split(","))
    if args.command == "run":
        from recsys.study.runner import run_study

        try:
            ran = run_study(spec, args.jobs, retry_failed=args.retry_failed)
        except KeyboardInterrupt:
            print(f"recsys: study {spec.name} stopped; `recsys study run {args.study}` goes on from where it stopped",
                  file=sys.stderr)
            return 130
        print(f"recsys: study {spec.name}: {ran} run(s) here; `recsys study report {args.study}` writes the report")
        return 0
    if args.command == "status":
        from recsys.study.runner import in_flight
        from recsys.study.runner import status as study_status

        rows = study_status(spec)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        wide = {key: max([len(key), *(len(str(r[key])) for r in rows)]) for key in ("dataset", "model", "phase")}
        print(f"{'dataset':<{wide['dataset']}} {'model':<{wide['model']}} {'phase':<{wide['phase']}} {'finished':>8} "
              f"{'running':>7} {'queued':>6} {'budget':>6} {'failed':>6} {'pruned':>6}")
        for r in rows:
            print(f"{r['dataset']:<{wide['dataset']}} {r['model']:<{wide['model']}} {r['phase']:<{wide['phase']}} "
                  f"{r['finished']:>8} {r['running']:>7} {r['queued']:>6} {r['budget']:>6} {r['failed']:>6} "
                  f"{r['pruned']:>6}")
        for r in in_flight(spec):
            worker = "interrupted" if r["interrupted"] else \
                {True: "worker alive", False: "worker gone", None: "worker on another host"}[r["worker_alive"]]
            after = "resumes it from its last checkpoint (same command and config)" if r["resumable"] else "starts it over"
            value = "" if r["value"] is None else f", {spec.select} {r['value']:.4f}"
            print(f"in flight: {r['run']} since {r['started'] or '?'} (attempt {r['attempt']}): epoch {r['epochs']} of "
                  f"{r['max_epochs'] or '?'} done{value}; {worker}"
                  + (f": the next `recsys study run` {after}" if r["worker_alive"] is False else ""))
        return 0
    from recsys.study.report import write_report

    out = write_report(spec, args.out)
    print(f"recsys: wrote {out / 'index.md'} and {out / 'index.html'}")
    return 0
