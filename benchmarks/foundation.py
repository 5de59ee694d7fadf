"""Issue-2 benchmark: our dense vs HF, and pruned speedup vs MACs reduction, on MiniLM.

    .venv/bin/python benchmarks/foundation.py [--batches 1,8] [--repeats 40]

Writes results/<machine-id>/tp-bench-minilm.json and .md (one row per schedule x batch).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import PruningConfig, from_pretrained
from tp_search.pruning.bench import BenchSettings, run_bench
from tp_search.pruning.core.atomic import atomic_write_text

SCHEDULES = {
    "mild": [1, 1, 0.8, 0.6, 0.5, 0.4],
    "medium": [1, 1, 0.7, 0.5, 0.4, 0.3],
    "aggressive": [1, 0.5, 0.3, 0.2, 0.15, 0.1],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--eval-samples", type=int, default=300)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    model = from_pretrained(a.model, num_labels=2)
    rows = []
    for b in [int(x) for x in a.batches.split(",")]:
        for name, keep in SCHEDULES.items():
            cfg = PruningConfig.topk(model.shape, keep)
            r = run_bench(model, cfg, "rotten_tomatoes",
                          BenchSettings(seq_len=128, batch=b, threads=1, repeats=a.repeats,
                                        eval_samples=a.eval_samples if b == 1 else 0))
            r["schedule"] = name
            rows.append(r)
            print(f"b{b} {name}: hf {r['latency_ms']['hf']['median_ms']:.2f} dense "
                  f"{r['latency_ms']['dense']['median_ms']:.2f} pruned "
                  f"{r['latency_ms']['pruned']['median_ms']:.2f} ms, speedup "
                  f"{r['speedup']['pruned_vs_dense']:.2f}x at MACs "
                  f"{r['macs_workload']['reduction_real']:.2f}x", flush=True)
    mid = fingerprint().machine_id
    out = Path(a.out) / mid
    atomic_write_text(out / "tp-bench-minilm.json", json.dumps(rows, indent=2) + "\n")
    lines = ["| batch | schedule | keep | HF ms | our dense ms | pruned ms | dense vs HF | "
             "pruned speedup | MACs reduction | efficiency |", "|" + "---|" * 10]
    for r in rows:
        lat, sp, m = r["latency_ms"], r["speedup"], r["macs_workload"]["reduction_real"]
        lines.append(f"| {r['workload']['batch']} | {r['schedule']} | "
                     f"{','.join(f'{k:g}' for k in r['config']['keep'])} | "
                     f"{lat['hf']['median_ms']:.2f} | {lat['dense']['median_ms']:.2f} | "
                     f"{lat['pruned']['median_ms']:.2f} | {sp['dense_vs_hf']:.2f}x | "
                     f"{sp['pruned_vs_dense']:.2f}x | {m:.2f}x | "
                     f"{sp['pruned_vs_dense'] / m:.2f} |")
    atomic_write_text(out / "tp-bench-minilm.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
