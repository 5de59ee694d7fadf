"""Measured speedup against MACs reduction ("speedup efficiency", physical limit 1.0).

    .venv/bin/python benchmarks/speedup_vs_macs.py [--arch bert-base] [--seq-lens 128,384]
        [--batches 1,8] [--threads 1] [--repeats 15]

Random-weight model of the named shape (latency does not depend on weights). For each
workload, schedules with MACs reductions from ~1.5x to ~8x (prune from layer 1 or 2 with a
geometric keep schedule, bisected to hit each target) are timed interleaved with the dense
model. Writes results/<machine-id>/speedup_vs_macs-<arch>.{csv,md}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import PruningConfig, random_model
from tp_search.pruning.measure.timing import Timing, time_interleaved
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.macs import dense_macs, schedule_macs

TARGETS = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def schedule(shape, n: int, target: float) -> PruningConfig:
    """keep[l] = r^(l - first + 1) from layer ``first`` on; r bisected for the MACs target."""
    L = shape.num_layers
    for first in (2, 1):
        lo, hi = 0.01, 1.0
        for _ in range(50):
            r = (lo + hi) / 2
            keep = [1.0 if l < first else max(r ** (l - first + 1), 1.0 / n) for l in range(L)]
            cfg = PruningConfig.topk(shape, keep)
            red = dense_macs(n, shape) / schedule_macs(n, cfg.kept_counts(n), shape)
            lo, hi = (lo, r) if red < target else (r, hi)
        if abs(red - target) / target < 0.08:
            return cfg
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="bert-base")
    ap.add_argument("--seq-lens", default="128,384")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = random_model(a.arch)
    shape = model.shape
    rows = []
    for b in map(int, a.batches.split(",")):
        for n in map(int, a.seq_lens.split(",")):
            ids = torch.randint(1000, 30000, (b, n))
            ids[:, 0] = 101
            cfgs = {t: schedule(shape, n, t) for t in TARGETS}
            dense = PruningConfig.dense(shape)  # built once, outside the timed calls
            fns = {"dense": lambda: model(ids, pruning=dense)}
            for t, c in cfgs.items():
                fns[f"x{t}"] = (lambda c=c: model(ids, pruning=c))
            s = time_interleaved(fns, repeats=a.repeats, warmup=2)
            for t, c in cfgs.items():
                red = dense_macs(n, shape) / schedule_macs(n, c.kept_counts(n), shape)
                sp = float(np.median(s["dense"] / s[f"x{t}"]))
                rows.append(dict(arch=a.arch, seq_len=n, batch=b, threads=a.threads,
                                 keep=",".join(f"{k:.3f}" for k in c.keep),
                                 macs_reduction=red,
                                 dense_ms=Timing.of(s["dense"]).median_ms,
                                 pruned_ms=Timing.of(s[f"x{t}"]).median_ms,
                                 speedup=sp, efficiency=sp / red))
                print(f"b{b} n{n} MACs {red:.2f}x -> speedup {sp:.2f}x "
                      f"(efficiency {sp / red:.2f})", flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out) / fingerprint().machine_id
    stem = f"speedup_vs_macs-{a.arch}-t{a.threads}"
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False, float_format="%.4f"))
    md = ["| seq | batch | MACs reduction | dense ms | pruned ms | speedup | efficiency |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r.seq_len} | {r.batch} | {r.macs_reduction:.2f}x | {r.dense_ms:.1f} | "
           f"{r.pruned_ms:.1f} | {r.speedup:.2f}x | {r.efficiency:.2f} |" for r in df.itertuples()]
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
