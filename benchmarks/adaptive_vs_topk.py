"""Top-k (ToP) against input-adaptive thresholds (LTP), each searched, trained and measured
the same way by the main job, at a few targets: the comparison LTP's paper could not make
(it reports FLOPs and throughput, never a latency target).

    .venv/bin/python benchmarks/adaptive_vs_topk.py --task bbc_news --workload dev \\
        --targets 15,25 [-- extra tp-search flags]

For every target, ``tp-search --method top`` and ``--method ltp`` run into their own default
run directories under ``runs/`` (named by a digest of the settings that differ from the
main job's, so the teacher and the distilled student are the main job's, from
``runs/cache/``); their summaries are collected into results/<machine>/adaptive_vs_topk-<task>.{csv,md}:
the measured p90 on the workload (real dev inputs, request by request), the dev accuracy
and its paired bootstrap interval against the fp32 teacher, the MACs reduction. A run that
stops (no candidate measured within the target: exit code 3) is a row saying so.
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

METHODS = ("top", "ltp")


def run(task: str, workload: str, target: float, method: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tp_search", "--task", task, "--workload", workload,
           "--latency-ms", f"{target:g}", "--method", method, "--format", "json", *extra]
    print(" ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    row = {"task": task, "workload": workload, "target_ms": target, "method": method,
           "exit_code": proc.returncode}
    if proc.returncode != 0:
        row["note"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row
    s = json.loads(proc.stdout)
    row["run"] = s.get("run_dir")
    m, a = s["measured"], s["accuracy"]
    q = m["percentile"]
    d = a["vs_teacher"]
    row.update({
        "deployed": f"{s['backend']}" + (f", {s['max_len']} tokens" if s["max_len"] else "")
                    + f", {s['config']['policy']}",
        "schedule": s["config"].get("keep") or s["config"].get("thresholds"),
        f"measured_p{q:g}_ms": m["at_percentile_ms"]["chosen"],
        "measured_median_ms": m["chosen_ms"]["median_ms"],
        "predicted_ms": m["predicted_ms"],
        "per_request_error_pct": m.get("per_request_median_abs_error_pct"),
        "meets": m["meets_target"], "dense_same_backend_ms": m["dense_ms"]["median_ms"],
        "dev_metric": a["deployed"], "teacher": a["teacher"],
        "vs_teacher_pts": 100 * d["diff"], "ci_low_pts": 100 * d["low"],
        "ci_high_pts": 100 * d["high"], "macs_reduction_real": s["macs_reduction"]["real_lengths"],
        "stages_s": sum(st["seconds"] for st in s["stages"])})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--workload", default="dev", choices=("max", "dev"))
    ap.add_argument("--targets", required=True, help="comma-separated latency targets (ms)")
    ap.add_argument("--out", default="results")
    ap.add_argument("extra", nargs="*", help="more tp-search flags (after --)")
    a = ap.parse_args()
    rows = [run(a.task, a.workload, float(t), m, a.extra)
            for t in a.targets.split(",") for m in METHODS]
    df = pd.DataFrame(rows)
    out = Path(a.out) / fingerprint().machine_id
    stem = f"adaptive_vs_topk-{a.task}-{a.workload}"
    atomic_write_text(out / f"{stem}.csv", df.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / f"{stem}.md", render(df, a))
    print(render(df, a))


def render(df: pd.DataFrame, a: argparse.Namespace) -> str:
    p = next((c for c in df.columns if c.startswith("measured_p")), None)
    lines = [f"# Top-k vs thresholds: {a.task}, {a.workload} workload, on "
             f"{fingerprint().machine_id}", "",
             "Each row is one `tp-search --method top|ltp` run (search, training, measurement "
             "of the deployed model on the workload). vs teacher: dev metric minus the fp32 "
             "teacher's at full length, paired bootstrap 95% interval, points.", "",
             f"| target ms | method | deployed | {p or 'measured'} | median ms | meets | dev "
             "metric | vs teacher (95% CI) | MACs reduction |", "|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        if r.get("exit_code"):
            lines.append(f"| {r['target_ms']:g} | {r['method']} | stopped (exit "
                         f"{r['exit_code']}): {r.get('note', '')} | | | | | | |")
            continue
        lines.append(f"| {r['target_ms']:g} | {r['method']} | {r['deployed']} | "
                     f"{r[p]:.2f} | {r['measured_median_ms']:.2f} | "
                     f"{'yes' if r['meets'] else 'NO'} | {r['dev_metric']:.4f} | "
                     f"{r['vs_teacher_pts']:+.2f} ({r['ci_low_pts']:+.2f}, "
                     f"{r['ci_high_pts']:+.2f}) | {r['macs_reduction_real']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
