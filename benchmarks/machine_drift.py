"""How much this machine's own speed moves over a few minutes, at 1 and 2 threads.

    .venv/bin/python benchmarks/machine_drift.py [--arch bert-base] [--seq-len 128]
        [--threads 1,2] [--seconds 120]

Times the same dense forward pass (random-weight model, batch 1) in blocks of 5 calls for
``--seconds`` per thread count and records the block medians in time order. On the 2-core
reference VM the 2-thread speed switches between two states ~25% apart that last from tens
of seconds to minutes (the 1-thread speed does not): no latency table, however measured, can
predict absolute 2-thread latency there better than the state it was measured in. Writes
results/<machine-id>/machine_drift-<arch>-n<seq>.{csv,json}. Run it alone.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import random_model
from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.core.atomic import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="bert-base")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    model = random_model(a.arch).eval()
    ids = fixed_inputs(model, None, a.seq_len, 1, 0)["input_ids"]
    rows, summary = [], {}
    with torch.inference_mode():
        for t in map(int, a.threads.split(",")):
            torch.set_num_threads(t)
            for _ in range(3):
                model(ids)
            start = time.perf_counter()
            blocks = []
            while time.perf_counter() - start < a.seconds:
                calls = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    model(ids)
                    calls.append((time.perf_counter() - t0) * 1e3)
                blocks.append(float(np.median(calls)))
                rows.append(dict(threads=t, t_s=round(time.perf_counter() - start, 2),
                                 block_median_ms=blocks[-1]))
            b = np.array(blocks)
            summary[f"t{t}"] = dict(blocks=len(b), median_ms=float(np.median(b)),
                                    p10_ms=float(np.percentile(b, 10)),
                                    p90_ms=float(np.percentile(b, 90)),
                                    min_ms=float(b.min()), max_ms=float(b.max()),
                                    spread=float((np.percentile(b, 90) - np.percentile(b, 10))
                                                 / np.median(b)))
            print(f"threads {t}: {json.dumps(summary[f't{t}'])}", flush=True)
    out = Path(a.out) / fingerprint().machine_id
    stem = f"machine_drift-{a.arch}-n{a.seq_len}"
    atomic_write_text(out / f"{stem}.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out / f"{stem}.json", json.dumps(
        dict(arch=a.arch, seq_len=a.seq_len, batch=1, seconds=a.seconds, **summary),
        indent=2) + "\n")


if __name__ == "__main__":
    main()
