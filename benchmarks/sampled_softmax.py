#!/usr/bin/env python3
"""SASRec's training step on a large synthetic catalog: full softmax (``ce``) vs sampled softmax.

Prints one table and writes ``benchmarks/results/sampled_softmax.json``. Every row times the
same SASRec (d_model 64, 2 blocks, L = 50) on the same machine in one run: ``model.loss(batch)``,
backward and the Adam step, after warm-up steps (Adam's state allocated), on random histories
of a catalog of ``--num-items`` items (default 10^6) with every position labelled (``tiled``
windows, stride = L). Throughput is labelled training targets per second.

Full CE materialises (T, N + 1) float32 logits and their gradients (T·N·4 bytes each: 1.6 GB at
T = 400, N = 10^6), so it runs at the largest batch this 24 GiB machine holds safely
(``--ce-batch``); its cost per target does not fall with the batch size (it is the T·N·D
product). Sampled softmax runs at that same batch (the like-for-like ratio) and at the usual
training batch (``--batch``, 256 windows = 12,800 targets), where the dense Adam update of the
10^6 x 64 item table is amortised over more targets. Usage::

    python benchmarks/sampled_softmax.py [--num-items 1000000] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "sampled_softmax.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-items", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--ce-batch", type=int, default=8, help="windows per batch for full CE (memory bound)")
    parser.add_argument("--batch", type=int, default=256, help="windows per batch for sampled softmax")
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summarize", type=Path, help="only recompute the ratios of, and print, a results file")
    args = parser.parse_args()
    if args.summarize:
        report: dict[str, Any] = json.loads(args.summarize.read_text())
        summarize(report)
        args.summarize.write_text(json.dumps(report, indent=2) + "\n")
        return

    import torch

    import recsys
    from recsys.models.losses import ItemLoss
    from recsys.models.sasrec import SASRec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SASRec(num_items=args.num_items, max_len=args.max_len, d_model=args.d_model, ffn_dim=4 * args.d_model)
    model.train()
    optimizer = model.configure_optimizers()

    def batch_of(windows: int):
        history = torch.randint(1, args.num_items + 1, (windows, args.max_len))
        labels = torch.cat([history[:, 1:], torch.randint(1, args.num_items + 1, (windows, 1))], 1)
        return recsys.Batch(history=history, target=labels[:, -1], user=torch.arange(1, windows + 1), labels=labels)

    k = args.negatives
    rows: list[tuple[str, str, int, ItemLoss]] = [  # (loss_type, negatives, windows per batch, loss)
        ("ce", "-", args.ce_batch, ItemLoss("ce")),
        ("sampled_softmax", "uniform", args.ce_batch, ItemLoss("sampled_softmax", k, "uniform")),
        ("sampled_softmax", "in_batch", args.ce_batch, ItemLoss("sampled_softmax", k, "in_batch")),
        ("sampled_softmax", "uniform", args.batch, ItemLoss("sampled_softmax", k, "uniform")),
        ("sampled_softmax", "in_batch", args.batch, ItemLoss("sampled_softmax", k, "in_batch")),
    ]
    batches = [batch_of(windows) for _, _, windows, _ in rows]
    last_loss = [0.0] * len(rows)

    def step(i: int) -> float:
        model.item_loss = rows[i][3]  # one model, its loss swapped per row (logQ correction on)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batches[i])
        loss.backward()
        optimizer.step()
        last_loss[i] = float(loss.detach())
        return time.perf_counter() - start

    # Interleaved rounds (one step of every row per round), so a change in the machine's load
    # (it is shared) hits every row alike instead of whichever ran at the time.
    for i in range(len(rows)):
        for _ in range(args.warmup):
            step(i)
    times: list[list[float]] = [[] for _ in rows]
    for round_ in range(args.steps):
        for i in range(len(rows)):
            times[i].append(step(i))
        print(f"  round {round_ + 1}/{args.steps}: " + "  ".join(f"{t[-1]:.3f}" for t in times) + " s/step", flush=True)
    results: list[dict[str, Any]] = []
    for (loss_type, sampling, windows, _), batch, row_times, loss_value in zip(rows, batches, times, last_loss):
        targets = int((batch.labels != 0).sum())
        step_s = sum(row_times) / len(row_times)
        results.append({
            "loss_type": loss_type,
            "negative_sampling": sampling if loss_type != "ce" else None,
            "num_negatives": args.negatives if loss_type != "ce" else None,
            "windows_per_batch": windows,
            "targets_per_batch": targets,
            "step_s": step_s,
            "step_s_min": min(row_times),
            "targets_per_s": targets / step_s,
            "loss": loss_value,
        })

    report = {
        "num_items": args.num_items,
        "max_len": args.max_len,
        "d_model": args.d_model,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rows": results,
    }
    summarize(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def summarize(report: dict[str, Any]) -> None:
    """Add the ratios to ``report`` (rows: ce first, then sampled at the ce batch, then at the
    large batch) and print the table.

    ``ce_targets_per_s_bound``: full CE's throughput at any batch size is at most
    T / (ce step - sampled step at the same batch): the sampled step at that batch times what the
    two share (encoder, dense Adam update of the item table) and the remainder, the T x N
    logits, grows with T. So the ratio against it is a lower bound of the speed-up had full CE
    been run at the large batch (which does not fit in memory).
    """
    rows = report["rows"]
    ce = rows[0]
    same = max(rows[1:3], key=lambda r: r["targets_per_s"])
    for r in rows:
        r["speedup_vs_ce"] = r["targets_per_s"] / ce["targets_per_s"]
    report["speedup_same_batch"] = same["speedup_vs_ce"]
    report["speedup_best"] = max(r["speedup_vs_ce"] for r in rows[1:])
    report["ce_targets_per_s_bound"] = ce["targets_per_batch"] / max(ce["step_s"] - same["step_s"], 1e-9)
    report["speedup_best_vs_ce_bound"] = max(r["targets_per_s"] for r in rows[1:]) / report["ce_targets_per_s_bound"]

    print()
    print(f"SASRec training step, N = {report['num_items']:,} items, d_model {report['d_model']}, "
          f"L = {report['max_len']}, {report['threads']} threads, mean of {report['steps']} steps")
    print(f"{'loss':16s} {'negatives':14s} {'B':>4s} {'targets':>8s} {'s/step':>8s} {'targets/s':>10s} {'vs ce':>7s}")
    for r in rows:
        negatives = "all N" if r["loss_type"] == "ce" else f"{r['num_negatives']} {r['negative_sampling']}"
        print(f"{r['loss_type']:16s} {negatives:14s} {r['windows_per_batch']:4d} {r['targets_per_batch']:8d} "
              f"{r['step_s']:8.3f} {r['targets_per_s']:10.0f} {r['speedup_vs_ce']:6.1f}x")
    print(f"sampled softmax vs full CE: {report['speedup_same_batch']:.1f}x at the same batch, "
          f"{report['speedup_best']:.1f}x at best (bar: >= 20x); full CE at any batch <= "
          f"{report['ce_targets_per_s_bound']:.0f} targets/s, so >= {report['speedup_best_vs_ce_bound']:.1f}x; "
          f"peak RSS {report['peak_rss_gb']:.1f} GB, load average {report['load_average_1m_at_end']:.1f}")


if __name__ == "__main__":
    main()
