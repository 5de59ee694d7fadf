"""Latency predictor accuracy on this machine: one table per figure row, collected in one file.

    .venv/bin/python benchmarks/predictor_accuracy.py            # measure, then collect
    .venv/bin/python benchmarks/predictor_accuracy.py --collect  # only collect what exists

Measuring runs, one after another (never alongside other work: a 2-core machine shared with
anything gives timings 20-80% off), the tp-profile commands of the predictor targets: MiniLM-L6
and bert-base shapes, batch 1, 1 thread, on every backend (PyTorch eager, ONNX Runtime fp32
and int8), random schedules at 128 tokens (and 512 for MiniLM, the main job's length). An
ONNX Runtime validation exports one graph per schedule, hence fewer samples there
(``--runs legacy`` adds the earlier 2-thread and batch-8 torch tables). Each writes its table
and validation files under results/machines/<id>/; this script then gathers every validation
JSON there into results/<id>/predictor_accuracy.{csv,md} with the table build times.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.runtime.registry import REFERENCE

RUNS = [
    "--model default --backend torch --threads 1 --batch 1 --max-len 512 --validate "
    "--samples 50 --seq-len 128,512",
    "--model default --backend ort,ort-int8 --threads 1 --batch 1 --max-len 512 --validate "
    "--samples 30 --seq-len 128,512",
    "--arch bert-base --backend torch --threads 1 --batch 1 --max-len 512 --validate "
    "--samples 50 --seq-len 128",
    "--arch bert-base --backend ort,ort-int8 --threads 1 --batch 1 --max-len 512 --validate "
    "--samples 20 --seq-len 128",
]
LEGACY = [
    "--model default --threads 1,2 --batch 1 --max-len 512 --validate --samples 50 --seq-len 128",
    "--arch bert-base --threads 1 --batch 1 --max-len 512 --validate --samples 50 --seq-len 128,384",
    "--arch bert-base --threads 2 --batch 1 --max-len 512 --validate --samples 50 --seq-len 128,384",
    "--model default --threads 1,2 --batch 8 --max-len 128 --validate --samples 20 --seq-len 128",
    "--arch bert-base --threads 1,2 --batch 8 --max-len 128 --validate --samples 10 --seq-len 128",
]


def collect(results: Path, machine_id: str) -> pd.DataFrame:
    mdir = results / "machines" / machine_id
    rows, tables = [], {}
    for f in sorted(mdir.glob("*-validate-*.json")):
        v = json.loads(f.read_text())
        if v["shape"] not in tables:  # several validations share one table
            tables[v["shape"]] = (json.loads((mdir / f"{v['shape']}.json").read_text()),
                                  pd.read_csv(mdir / f"{v['shape']}.csv"))
        table, e = tables[v["shape"]]
        top = int(e[(e.batch == v["batch"]) & (e.threads == v["threads"])].n.max())
        cal = table["calibration"].get(f"b{v['batch']}-t{v['threads']}", {})
        shape, _, backend = v["shape"].partition("@")
        rows.append(dict(shape=shape, backend=backend or REFERENCE, batch=v["batch"],
                         threads=v["threads"],
                         seq_len=v["seq_len"], samples=v["samples"],
                         median_abs_error=v["median_abs_error"],
                         p90_abs_error=v["p90_abs_error"], within_10pct=v["within_10pct"],
                         relative_median_abs_error=v.get("relative_median_abs_error"),
                         relative_within_10pct=v.get("relative_within_10pct"),
                         machine_spread=v.get("machine_spread"),
                         dense_measured_ms=v.get("dense_measured_ms"),
                         dense_predicted_ms=v.get("dense_predicted_ms"),
                         table_max_len=top,
                         table_build_s=cal.get("total_seconds"), file=f.name))
    return pd.DataFrame(rows).sort_values(["shape", "backend", "batch", "threads", "seq_len"])


def markdown(df: pd.DataFrame) -> str:
    def pct(x) -> str:
        return "—" if x is None or pd.isna(x) else f"{x:.1%}"

    def share(x) -> str:
        return "—" if x is None or pd.isna(x) else f"{x:.0%}"
    md = ["| shape | backend | batch | threads | seq | configs | median abs err | p90 abs err | "
          "within ±10% | within ±10% vs dense | machine spread | table build |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        md.append(f"| {r.shape} | {r.backend} | {r.batch} | {r.threads} | {r.seq_len} | "
                  f"{r.samples} | "
                  f"{pct(r.median_abs_error)} | {pct(r.p90_abs_error)} | {r.within_10pct:.0%} | "
                  f"{share(r.relative_within_10pct)} | {pct(r.machine_spread)} | "
                  f"{r.table_build_s} s (to {r.table_max_len}) |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--collect", action="store_true", help="only gather existing validations")
    ap.add_argument("--runs", choices=("backends", "legacy"), default="backends")
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    results = Path(a.out)
    if not a.collect:
        exe = Path(sys.executable).with_name("tp-profile")
        for args in RUNS if a.runs == "backends" else LEGACY:
            cmd = [str(exe), *args.split(), "--out", str(results)]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    mid = fingerprint().machine_id
    df = collect(results, mid)
    out = results / mid
    atomic_write_text(out / "predictor_accuracy.csv", df.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "predictor_accuracy.md", markdown(df))
    print(markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
