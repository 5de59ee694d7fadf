"""Accuracy against *measured* latency for every method, one Pareto plot.

    .venv/bin/python benchmarks/methods.py --teacher DIR [--ltp DIR] [--top-macs DIR]
        [--top-latency DIR] [--seq-len 128] [--repeats 30]

Methods: the dense teacher truncated to shorter max lengths, static top-k on the teacher
(no retraining), and trained models (LTP, ToP with a MACs constraint, ToP with a latency
constraint). Accuracy on the full dev set (truncated to --seq-len, or to the truncation
length); latency of one input of --seq-len real tokens, batch 1, 1 thread, timed interleaved
with the dense teacher. Writes results/<machine-id>/methods.{csv,md,png}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import PruningConfig, load
from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.measure.accuracy import evaluate
from tp_search.pruning.measure.timing import time_interleaved
from tp_search.pruning.data import load_task
from tp_search.pruning.core.atomic import atomic_write_text

STATIC = {"static mild": [1, 1, 0.8, 0.6, 0.5, 0.4], "static medium": [1, 1, 0.7, 0.5, 0.4, 0.3],
          "static aggressive": [1, 0.5, 0.3, 0.2, 0.15, 0.1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--ltp")
    ap.add_argument("--top-macs")
    ap.add_argument("--top-latency")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    torch.set_num_threads(1)
    n = a.seq_len
    dev = load_task("rotten_tomatoes", "dev")
    teacher = load(a.teacher)
    dense = PruningConfig.dense(teacher.shape)
    x = fixed_inputs(teacher, dev, n, 1)
    entries = []  # (method, model, config, max_len for accuracy, timed length)
    for m in (n, 64, 32, 16):
        entries.append((f"dense truncated to {m}" if m < n else "dense teacher", teacher,
                        dense, m, m))
    for name, keep in STATIC.items():
        entries.append((name, teacher, PruningConfig.topk(teacher.shape, keep), n, n))
    for name, path in (("LTP", a.ltp), ("ToP (MACs constraint)", a.top_macs),
                       ("ToP (latency constraint)", a.top_latency)):
        if path:
            model = load(path)
            entries.append((name, model, model.pruning, n, n))
    rows = []
    for name, model, cfg, acc_len, t_len in entries:
        r = evaluate(model, dev, acc_len, pruning=cfg)
        xi = {k: v[:, :t_len].clone() for k, v in x.items()}
        xi["input_ids"][:, -1] = x["input_ids"][0, -1]  # keep [SEP] last
        s = time_interleaved(
            {"ref": lambda: teacher(x["input_ids"], pruning=dense),
             "m": lambda: model(xi["input_ids"], pruning=cfg)}, repeats=a.repeats)
        rows.append(dict(method=name, accuracy=r.score, latency_ms=float(np.median(s["m"])),
                         dense_ms=float(np.median(s["ref"])),
                         speedup=float(np.median(s["ref"] / s["m"])),
                         macs_reduction_real=r.macs(cfg, acc_len).reduction_real,
                         config=str(cfg.keep or cfg.thresholds or "dense")))
        print(f"{name}: acc {r.score:.4f}, {rows[-1]['latency_ms']:.2f} ms, "
              f"speedup {rows[-1]['speedup']:.2f}x", flush=True)
    df = pd.DataFrame(rows)
    out = Path(a.out) / fingerprint().machine_id
    atomic_write_text(out / "methods.csv", df.to_csv(index=False, float_format="%.4f"))
    md = ["| method | dev accuracy | measured ms | speedup vs dense | MACs reduction (real) |",
          "|---|---|---|---|---|"]
    md += [f"| {r.method} | {r.accuracy:.4f} | {r.latency_ms:.2f} | {r.speedup:.2f}x | "
           f"{r.macs_reduction_real:.2f}x |" for r in df.itertuples()]
    atomic_write_text(out / "methods.md", "\n".join(md) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam, marker in (("dense", "s"), ("static", "o"), ("LTP", "^"), ("ToP", "D")):
        d = df[df.method.str.startswith(fam)]
        ax.scatter(d.latency_ms, d.accuracy, marker=marker, label=fam)
        for r in d.itertuples():
            ax.annotate(r.method.replace("dense truncated to ", "trunc "), (r.latency_ms,
                        r.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured latency, one input of {n} real tokens (ms)")
    ax.set_ylabel("dev accuracy (rotten_tomatoes)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out / ".methods.png.tmp.png"
    fig.savefig(tmp, dpi=120)
    tmp.replace(out / "methods.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
