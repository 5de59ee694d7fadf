"""Lever map: when is token pruning worth it? Each lever alone and all combined, per task
and latency target, measured.

    .venv/bin/python benchmarks/lever_map.py --task bbc_news --teacher DIR --seq-len 512
        [--fractions 1.5,2,3,5,8] [--trials 100] [--eval-samples 200] [--label bbc_news]

Targets are the dense PyTorch fp32 model's measured latency (one input of --seq-len real
tokens, batch 1, 1 thread) divided by each fraction. Levers, all applied to the fine-tuned
fp32 teacher as it is (static top-k, no retraining, so that every lever sees the same
model): truncation only (dense PyTorch, shorter max length), runtime/int8 only (dense ONNX
Runtime fp32 or int8, full length), token pruning only (PyTorch, full length, top-k
schedules) and all combined (tp-search's space: backend x truncation x schedule). The
candidates come from two tp-search runs at the loosest target (all levers; pruning only):
each lever takes its most accurate candidate planned under the target (5% margin), then
every chosen candidate is timed interleaved with the dense model and scored on the whole
dev set with its own numerics and truncation. Appends to
results/<machine>/lever_map.{csv,md,png} (one task per run; rerun a task to replace it).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import PruningConfig
from tp_search.pruning.measure.accuracy import evaluate_runner
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.measure.timing import Timing, time_interleaved
from tp_search.pruning.data import load_task
from tp_search.pruning.core.atomic import atomic_save_figure, atomic_write_text
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.search.run import run_search
from tp_search.pruning.runtime import REFERENCE, get_backend
from tp_search.search.search_settings import SearchSettings

LEVERS = ("truncation only", "runtime/int8 only", "token pruning only", "all combined")
MARGIN = 0.05


def candidates(search: Any, pruning_only: Any, machine: str) -> pd.DataFrame:
    """Every evaluated candidate with its predicted latency, tagged by the levers it uses."""
    rows = []
    for r in search.references:
        lat = r["latency_ms"].get(machine)
        if r["metric"] is None or lat is None:
            continue
        lever = ("truncation only" if r["backend"] == REFERENCE and r["max_len"] else
                 "runtime/int8 only" if r["backend"] != REFERENCE and not r["max_len"] else
                 "dense" if r["backend"] == REFERENCE else "all combined")
        rows.append({"lever": lever, "backend": r["backend"], "max_len": r["max_len"],
                     "keep": "dense", "predicted_ms": lat, "proxy_metric": r["metric"]})
    for res, lever in ((pruning_only, "token pruning only"), (search, "all combined")):
        df = res.trials[res.trials["metric"].notna()]
        for t in df.itertuples():
            rows.append({"lever": lever, "backend": t.backend, "max_len": int(t.max_len),
                         "keep": t.keep, "predicted_ms": t.latency_ms,
                         "proxy_metric": t.metric})
    out = pd.DataFrame(rows)
    single = out[out.lever.isin(("truncation only", "runtime/int8 only",
                                 "token pruning only", "dense"))]
    # every single-lever candidate is also a candidate of the combination
    return pd.concat([out, single.assign(lever="all combined")], ignore_index=True)


def choose(cands: pd.DataFrame, lever: str, target: float) -> pd.Series | None:
    pool = cands[(cands.lever.isin((lever, "dense"))) &
                 (cands.predicted_ms <= target * (1 - MARGIN))]
    if pool.empty:
        return None
    return pool.sort_values(["proxy_metric", "predicted_ms"], ascending=[False, True]).iloc[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--teacher", required=True, help="the fine-tuned fp32 model directory")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--label", help="task label in the outputs (default: the task's name)")
    ap.add_argument("--fractions", default="1.5,2,3,5,8")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--runs", default="runs/lever_map")
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    torch.set_num_threads(1)
    label = a.label or Path(a.task).stem
    teacher = from_pretrained(a.teacher)
    dev = load_task(a.task, "dev")
    dense = PruningConfig.dense(teacher.shape)
    x = fixed_inputs(teacher, dev, a.seq_len, 1)
    with torch.inference_mode():
        dense_ms = float(np.median(time_interleaved(
            {"d": lambda: teacher(x["input_ids"], x["attention_mask"], pruning=dense)},
            repeats=a.repeats, warmup=3)["d"]))
    fractions = [float(f) for f in a.fractions.split(",")]
    targets = {f: dense_ms / f for f in fractions}
    print(f"{label}: dense PyTorch fp32 {dense_ms:.2f} ms; targets "
          + ", ".join(f"{t:.2f}" for t in targets.values()), flush=True)
    loosest = max(targets.values())
    common = dict(latency_ms=loosest, task=a.task, model=a.teacher, seq_len=a.seq_len,
                  trials=a.trials, eval_samples=a.eval_samples, measure=False, progress=True,
                  always_search=True)  # the loosest target may be met by dense ORT
    search = run_search(SearchSettings(out=f"{a.runs}/{label}/all", **common))
    pruning_only = run_search(SearchSettings(out=f"{a.runs}/{label}/pruning",
                                             backends=(REFERENCE,), truncation=(0,),
                                             **common))
    cands = candidates(search, pruning_only, search.primary.machine_id)
    picks: list[dict[str, Any]] = []
    for f, t in targets.items():
        for lever in LEVERS:
            row = choose(cands, lever, t)
            picks.append({"task": label, "fraction": f, "target_ms": t, "lever": lever,
                          **({} if row is None else row.drop("lever").to_dict())})
    measure(picks, teacher, dev, a, dense_ms)
    write(pd.DataFrame(picks), Path(a.out) / fingerprint().machine_id, label)


def measure(picks: list[dict[str, Any]], teacher: Any, dev: Any, a: argparse.Namespace,
            dense_ms: float) -> None:
    """Time every distinct pick interleaved with the dense model; score it on all of dev."""
    runs: dict[tuple, Any] = {}
    for p in picks:
        if "backend" not in p:
            continue
        key = (p["backend"], p["max_len"], p["keep"])
        if key not in runs:
            keep = None if p["keep"] == "dense" else [float(k) for k in p["keep"].split(",")]
            cfg = PruningConfig.dense(teacher.shape) if keep is None else \
                PruningConfig.topk(teacher.shape, keep)
            n = min(a.seq_len, p["max_len"]) if p["max_len"] else a.seq_len
            runs[key] = (get_backend(p["backend"]).build(teacher, cfg), n)
    feeds = {n: fixed_inputs(teacher, dev, n, 1) for _, n in runs.values()}
    fns = {str(k): (lambda r=r, n=n: r(feeds[n])) for k, (r, n) in runs.items()}
    dense = get_backend(REFERENCE).build(teacher, PruningConfig.dense(teacher.shape))
    fns["dense"] = lambda: dense(feeds[a.seq_len] if a.seq_len in feeds
                                 else fixed_inputs(teacher, dev, a.seq_len, 1))
    with torch.inference_mode():
        samples = time_interleaved(fns, repeats=a.repeats, warmup=3)
    teacher_metric = evaluate_runner(dense, dev, a.seq_len, teacher.tokenizer).score
    scores = {k: evaluate_runner(r, dev, n, teacher.tokenizer).score
              for k, (r, n) in runs.items()}
    for p in picks:
        p["teacher_metric"] = teacher_metric
        p["dense_ms"] = float(np.median(samples["dense"]))
        if "backend" not in p:
            continue
        key = (p["backend"], p["max_len"], p["keep"])
        t = Timing.of(samples[str(key)])
        p.update(measured_ms=t.median_ms, measured_p90_ms=t.p90_ms, metric=scores[key],
                 meets=t.p90_ms <= p["target_ms"])


def write(df: pd.DataFrame, out: Path, label: str) -> None:
    csv = out / "lever_map.csv"
    old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    if len(old):
        old = old[old.task != label]
    df = pd.concat([old, df], ignore_index=True)
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.4f"))
    lines = ["| task | target (dense / x) | lever | backend | max len | keep | measured ms "
             "(p90) | meets | dev metric | vs teacher (points) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        if pd.isna(getattr(r, "metric", np.nan)):
            lines.append(f"| {r.task} | {r.target_ms:.1f} ms (/{r.fraction:g}) | {r.lever} | "
                         "none reaches it | | | | | | |")
            continue
        lines.append(f"| {r.task} | {r.target_ms:.1f} ms (/{r.fraction:g}) | {r.lever} | "
                     f"{r.backend} | {r.max_len or 'full'} | {r.keep} | "
                     f"{r.measured_ms:.2f} ({r.measured_p90_ms:.2f}) | "
                     f"{'yes' if r.meets else 'no'} | {r.metric:.4f} | "
                     f"{100 * (r.metric - r.teacher_metric):+.1f} |")
    atomic_write_text(out / "lever_map.md", "\n".join(lines) + "\n")
    plot(df, out / "lever_map.png")
    print("\n".join(lines))


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib  # here: Agg must be chosen before pyplot loads
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(df.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        d = df[df.task == task]
        for lever, marker in zip(LEVERS, "v^os"):
            e = d[(d.lever == lever)].dropna(subset=["metric"]).sort_values("fraction")
            ax.plot(e.fraction, e.metric, marker=marker, label=lever)
        ax.axhline(d.teacher_metric.iloc[0], color="black", ls=":", lw=1,
                   label="fp32 teacher, full length")
        ax.set_xscale("log")
        ax.set_xticks(sorted(d.fraction.unique()))
        ax.set_xticklabels([f"/{f:g}" for f in sorted(d.fraction.unique())])
        ax.set_xlabel("latency target (dense PyTorch fp32 latency divided by)")
        ax.set_ylabel("dev metric (measured)")
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
