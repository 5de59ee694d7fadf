"""tp-search's deployed models against every one-line alternative, in one interleaved run.

    .venv/bin/python benchmarks/peers.py --teacher DIR --deployed RUN/model [RUN2/model ...]
        [--task rotten_tomatoes] [--seq-len 128] [--target-ms 20] [--repeats 40]

Peers, all built from the fp32 teacher: transformers eager fp32, transformers + torch
dynamic int8 (``torch.ao.quantization.quantize_dynamic`` on every Linear, deprecated:
measured as a peer), transformers under ``torch.autocast`` bf16 (where the CPU has native
bf16; elsewhere listed as not run), and the dense model on every other backend of the
registry that runs here (ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 and int8, ...),
each at the full length and truncated to 1/2 and 1/4 of it. A backend that cannot run on
this CPU is listed with the reason. Latency: one input of --seq-len real tokens (truncated
for the truncated runners), batch 1, 1 thread, every runner timed round after round in one
process; median and p90. Accuracy: the task's dev metric for each runner with its own
numerics and truncation. A deployed model's target is read from its run's summary.json
(--target-ms otherwise). Writes results/<machine>/peers-<task>-n<seq>.{csv,md,png}.
"""
from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from tp_search.profiler.fingerprint import fingerprint
from tp_search.pruning import PruningConfig, load
from tp_search.pruning.measure.accuracy import evaluate_runner
from tp_search.pruning.bench.compare import hf_inputs, hf_twin
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.measure.timing import Timing, time_interleaved
from tp_search.pruning.data import load_task
from tp_search.pruning.core.atomic import atomic_save_figure, atomic_write_text
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.measure.calibration_data import calibration_batches
from tp_search.pruning.runtime import REFERENCE, get_backend, names, why_unavailable
from tp_search.pruning.runtime.deploy import manifest

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def hf_runner(model: Any, hf: Any) -> Callable:
    def run(b: dict) -> torch.Tensor:
        return hf(**hf_inputs(model, {k: b[k] for k in INPUTS if k in b})).logits
    return run


def peers(teacher: Any, seq_len: int, threads: int, task: str
          ) -> tuple[list[dict[str, Any]], list[str]]:
    """The one-line alternatives, each at full length and at 1/2 and 1/4 of it; and the
    ones that cannot run on this machine, with the reason."""
    hf = hf_twin(teacher).eval()
    with warnings.catch_warnings():  # torch.ao is deprecated: measured here as a peer
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(hf), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    dense = PruningConfig.dense(teacher.shape)
    base = [("transformers fp32", "none", hf_runner(teacher, hf)),
            ("transformers + torch int8", "precision", hf_runner(teacher, q))]
    skipped = []
    if native_bf16():
        base.append(("transformers, bf16 autocast", "precision", bf16_runner(teacher, hf)))
    else:
        skipped.append("transformers, bf16 autocast: this CPU has no native bf16 (no AMX or "
                       "AVX512-BF16); emulated bf16 is not a lever worth timing")
    calib = calibration_batches(teacher.tokenizer, load_task(task, "train"), seq_len)
    for name in names():
        if name == REFERENCE:
            continue  # transformers eager fp32 is the PyTorch peer
        why = why_unavailable(name)
        if why is not None:
            skipped.append(f"{name}: {why}")
            continue
        b = get_backend(name)
        run = b.build(teacher, dense, threads=threads,
                      calibration=calib if b.calibrated else None)
        base.append((name, "runtime" if b.precision == "fp32" else "runtime + precision", run))
    out = []
    for frac in (1, 2, 4):
        n = seq_len // frac
        for name, lever, run in base:
            out.append({"runner": name if frac == 1 else f"{name}, truncated to {n}",
                        "kind": "peer", "lever": lever if frac == 1 else
                        ("truncation" if lever == "none" else f"{lever} + truncation"),
                        "max_len": n, "run": run})
    return out, skipped


def bf16_runner(model: Any, hf: Any) -> Callable:
    run = hf_runner(model, hf)

    def bf16(b: dict) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run(b).float()
    return bf16


def native_bf16() -> bool:
    """AVX512-BF16 or AMX, as the profiler's fingerprint reads the CPU flags."""
    isa = set(fingerprint().isa)
    return bool(isa & {"avx512_bf16", "amx_bf16"})


def deployed(paths: list[str], seq_len: int) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        d = load(p)
        info = manifest(Path(p)) or {}
        n = min(seq_len, int(info.get("max_len") or 0) or seq_len)
        backend = info.get("backend", REFERENCE)
        keep = d.pruning.keep or d.pruning.thresholds
        summary = Path(p).parent / "summary.json"
        target = json.loads(summary.read_text()).get("target_ms") if summary.is_file() else None

        def run(b: dict, d: Any = d) -> torch.Tensor:
            return d(b["input_ids"], b.get("attention_mask"), b.get("token_type_ids"))
        out.append({"runner": f"tp-search {Path(p).parent.name or p}", "kind": "tp-search",
                    "lever": backend + ("" if d.pruning.is_dense else " + token pruning")
                             + (f" + truncation to {n}" if n < seq_len else ""),
                    "max_len": n, "run": run, "config": str(keep), "path": str(p),
                    "target_ms": target})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True, help="the fine-tuned fp32 model directory")
    ap.add_argument("--deployed", nargs="*", default=[], help="tp-search RUN/model dirs")
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--target-ms", type=float, help="the deployed models' latency target")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-samples", type=int, default=0, help="dev examples (0: all)")
    ap.add_argument("--out", default="results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = from_pretrained(a.teacher)
    dev = load_task(a.task, "dev")
    if a.eval_samples:
        dev = dev.subset(a.eval_samples)
    ours = deployed(a.deployed, a.seq_len)
    base, skipped = peers(teacher, a.seq_len, a.threads, a.task)
    entries = base + ours
    for s in skipped:
        print(f"not run: {s}", flush=True)
    feeds = {n: fixed_inputs(teacher, dev, n, 1) for n in {e["max_len"] for e in entries}}
    fns = {e["runner"]: (lambda e=e: e["run"](feeds[e["max_len"]])) for e in entries}
    print(f"timing {len(fns)} runners interleaved, {a.repeats} rounds", flush=True)
    with torch.inference_mode():
        samples = time_interleaved(fns, repeats=a.repeats, warmup=3)
    rows = []
    for e in entries:
        t = Timing.of(samples[e["runner"]])
        score = evaluate_runner(e["run"], dev, e["max_len"], teacher.tokenizer).score
        rows.append({"runner": e["runner"], "kind": e["kind"], "lever": e["lever"],
                     "max_len": e["max_len"], "median_ms": t.median_ms, "p90_ms": t.p90_ms,
                     "metric": score, "config": e.get("config", "dense"),
                     "target_ms": e.get("target_ms") or a.target_ms})
        print(f"{e['runner']}: {t.median_ms:.2f} ms (p90 {t.p90_ms:.2f}), dev {score:.4f}",
              flush=True)
    df = pd.DataFrame(rows)
    ref = df.loc[df.runner == "transformers fp32"].iloc[0]
    df["vs_transformers_fp32"] = ref.median_ms / df.median_ms
    df["delta_vs_teacher_pts"] = 100 * (df.metric - ref.metric)
    out = Path(a.out) / fingerprint().machine_id
    stem = f"peers-{Path(a.task).stem}-n{a.seq_len}"
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False, float_format="%.4f"))
    md = summary(df, a, ref, skipped)
    atomic_write_text(out / f"{stem}.md", md)
    plot(df, a, out / f"{stem}.png")
    print(md)


def summary(df: pd.DataFrame, a: argparse.Namespace, ref: pd.Series, skipped: list[str]
            ) -> str:
    lines = [f"# Peers: {a.task}, one input of {a.seq_len} real tokens, batch 1, "
             f"{a.threads} thread(s)", "",
             "Every runner timed interleaved in one process (median, p90); dev metric with "
             "the runner's own numerics and truncation; the teacher is transformers fp32 at "
             "full length.", "",
             "| runner | lever | max len | median ms | p90 ms | vs transformers fp32 | "
             "dev metric | vs teacher (points) |", "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.runner} | {r.lever} | {r.max_len} | {r.median_ms:.2f} | "
                     f"{r.p90_ms:.2f} | {r.vs_transformers_fp32:.2f}x | {r.metric:.4f} | "
                     f"{r.delta_vs_teacher_pts:+.1f} |")
    peers_, ours = df[df.kind == "peer"], df[df.kind == "tp-search"]
    dense_peers = peers_[peers_.max_len == a.seq_len]
    fastest = dense_peers.loc[dense_peers.median_ms.idxmin()]
    lines += ["", f"- Fastest dense peer at full length: {fastest.runner}, "
                  f"{fastest.median_ms:.2f} ms, dev {fastest.metric:.4f}."]
    close = ours[ours.delta_vs_teacher_pts >= -1.0]
    for r in close.itertuples():
        lines.append(f"- {r.runner} is within 1.0 point of the teacher ({r.metric:.4f}) and "
                     f"{fastest.median_ms / r.median_ms:.2f}x faster than {fastest.runner}.")
    if ours.size and close.empty:
        lines.append("- No tp-search model here is within 1.0 point of the teacher.")
    for target in sorted({t for t in ours.target_ms.dropna()} | (
            {a.target_ms} if a.target_ms and ours.empty else set())):
        ok = peers_[peers_.p90_ms <= target]
        best = ok.metric.max() if len(ok) else float("nan")
        lines.append(f"- Peers whose measured p90 is within {target:g} ms: "
                     + (", ".join(f"{r.runner} ({r.metric:.4f})" for r in ok.itertuples())
                        or "none") + ".")
        for r in ours[ours.target_ms == target].itertuples():
            verdict = ("at least as accurate as every one of them" if not len(ok)
                       or r.metric >= best else f"less accurate than the best of them "
                       f"({best:.4f})")
            lines.append(f"- {r.runner} (target {target:g} ms): p90 {r.p90_ms:.2f} ms "
                         f"({'meets' if r.p90_ms <= target else 'MISSES'} the target), "
                         f"dev {r.metric:.4f}: {verdict}.")
    lines += [f"- Not run here: {s}." for s in skipped]
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, a: argparse.Namespace, path: Path) -> None:
    import matplotlib  # here: Agg must be chosen before pyplot loads
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"peer": ("o", "tab:gray"), "tp-search": ("*", "tab:orange")}
    for kind, (marker, color) in styles.items():
        d = df[df.kind == kind]
        ax.scatter(d.median_ms, d.metric, marker=marker, s=90 if kind == "tp-search" else 30,
                   color=color, label=kind, zorder=3)
        for r in d.itertuples():
            ax.annotate(r.runner.replace("truncated to", "trunc"), (r.median_ms, r.metric),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    order = df.sort_values("median_ms")
    front, best = [], -np.inf
    for r in order.itertuples():
        if r.metric > best:
            front.append((r.median_ms, r.metric))
            best = r.metric
    ax.step(*zip(*front), where="post", color="tab:purple", alpha=0.6, label="Pareto front")
    if a.target_ms:
        ax.axvline(a.target_ms, color="tab:red", ls="--", label=f"target {a.target_ms:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel(f"measured median latency, one input of {a.seq_len} tokens (ms, log)")
    ax.set_ylabel(f"dev metric ({a.task})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
