"""The main job's last stage: deploy the trained model on its chosen backend, then report
its dev metric (with the backend's numerics and truncation) against the fp32 teacher at
full length, and its latency measured on both workloads against the target.

The deployed directory is what gets timed: ``pruning.load(RUN/model)`` runs it exactly as a
user would.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tp_search.profiler.store import load_predictor
from tp_search.pruning.measure.accuracy import evaluate
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import load_task, metrics, real_lengths
from tp_search.pruning.measure.calibration_data import calibration_batches
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.model.encoder import ForwardInfo

from tp_search.search.selection.verify import measure
from tp_search.search.scoring.proxy import ProxyEvaluator
from tp_search.pruning.runtime import REFERENCE, get_backend
from tp_search.pruning.runtime.deploy import deploy, load_runner
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.candidates import Candidate
from tp_search.pruning.macs import reductions
from tp_search.search.space.workload import Workload

log = logging.getLogger("tp.pipeline")


def predicted_latency(pred: Any, model: Any, cfg: PruningConfig, workload: Workload,
                      max_len: int, dev: Any, seed: int) -> float:
    """Prediction at the workload's percentile length; a threshold model keeps
    input-dependent counts, taken from one real input of that length."""
    n = workload.length(max_len)
    if cfg.policy != "threshold":
        return pred.predict(cfg, n)
    x = fixed_inputs(model, dev, n, workload.batch, seed)
    info = ForwardInfo()
    with torch.inference_mode():
        model(x["input_ids"], x["attention_mask"], info=info)
    kept = [int(k.max()) for k in info.kept]
    return pred.predict_counts(n, kept, [cfg.prunes_at(l) for l in range(len(kept))])


def final_report(s: SearchSettings, choice: Candidate, model_dir: str, teacher_dir: str,
                 run_dir: Path, workload: Workload, here: bool, eval_samples: int = 0,
                 config: PruningConfig | None = None) -> dict[str, Any]:
    """Deploy ``model_dir`` (with ``config`` if given) as ``choice`` says; measure it."""
    torch.set_num_threads(os.cpu_count() or 1)  # evaluation: throughput; measure() sets its own
    model = from_pretrained(model_dir)
    if config is not None:
        model.set_pruning(config)
    cfg = model.pruning
    c = Candidate(choice.backend, choice.max_len, cfg)
    teacher = from_pretrained(teacher_dir)
    dev = load_task(s.task, "dev")
    ev_split = dev.subset(eval_samples, s.seed) if eval_samples else dev
    deployed = run_dir / "model"
    deploy(model, cfg, c.backend, deployed, c.max_len, s.threads, task=s.task,
           metric=metrics.primary(dev.task.metric), seq_len=workload.seq_len,
           calibration=calibration_batches(model.tokenizer, load_task(s.task, "train"),
                                           workload.seq_len)
           if get_backend(c.backend).calibrated else None)
    runner = load_runner(deployed)
    # accuracy with the deployed numerics and truncation, against the fp32 teacher at full
    # length; topk kept counts (for MACs) come from the PyTorch reference of the same model
    proxy = ProxyEvaluator(model, ev_split, workload.seq_len, runner_for=lambda _: runner)
    metric = (evaluate(model, ev_split, proxy.length(c), progress=s.progress).score
              if c.backend == REFERENCE else proxy.evaluate_runner(runner, c))
    reference = evaluate(model, ev_split, proxy.length(c), progress=s.progress)
    teacher_metric = evaluate(teacher, ev_split, workload.seq_len,
                              pruning=PruningConfig.dense(teacher.shape),
                              progress=s.progress).score
    machine = s.machines[0] if s.machines else None
    pred = load_predictor(model.shape, s.device, machine, s.threads, s.batch, s.results,
                          backend=c.backend)
    predicted = predicted_latency(pred, model, cfg, workload, c.max_len, dev, s.seed)
    predicted_dense = workload.predict(pred, PruningConfig.dense(model.shape))
    measured: dict[str, Any] = {}
    if here:  # the stated workload decides; the other one is reported beside it
        other = "dev" if workload.kind == "max" else "max"
        for w in (workload, replace(workload, kind=other)):
            dense = PruningConfig.dense(model.shape)
            runners = {"chosen": (runner, c.max_len),
                       "dense": (get_backend(c.backend).build(model, dense, threads=s.threads),
                                 0)}
            if c.backend != REFERENCE:
                runners["reference"] = (get_backend(REFERENCE).build(
                    model, dense, threads=s.threads), 0)
            m = measure(runners, model, dev, w, predicted_latency(
                pred, model, cfg, w, c.max_len, dev, s.seed),
                w.predict(pred, dense), s.latency_ms, s.threads,
                repeats=max(s.repeats, 30), device=s.device, seed=s.seed)
            measured[w.kind] = m.to_dict() | {"workload_note": w.describe()}
    # against the dense model on each example's real length (up to seq_len) and padded to
    # seq_len: truncation is part of the reduction, not of the baseline
    real = real_lengths(model.tokenizer, ev_split, workload.seq_len)
    if cfg.policy == "threshold":  # input-dependent counts: measured by the encoder
        mr = reference.macs(cfg, workload.seq_len)
        padded, real_red = mr.reduction_padded, mr.reduction_real
    else:
        padded, real_red = reductions(cfg, Counter(real), workload.seq_len, c.max_len)
    m = measured.get(workload.kind)
    summary = {
        "target_ms": s.latency_ms, "task": s.task, "machine": pred.machine_id,
        "model_dir": str(deployed), "backend": c.backend, "max_len": c.max_len,
        "workload": {**workload.to_dict(), "threads": s.threads, "device": s.device},
        "config": cfg.to_dict(),
        "metric": reference.primary, "dev_metric": metric,
        "dev_metric_torch_fp32": reference.score, "teacher_dev_metric": teacher_metric,
        "dev_examples": len(ev_split),
        "predicted_ms": predicted, "predicted_dense_ms": predicted_dense,
        "macs_reduction": {"real_lengths": real_red, "padded_to_max_len": padded},
        "measured": m, "measured_other_workload": {k: v for k, v in measured.items()
                                                   if k != workload.kind},
        "meets_target": None if m is None else m["meets_target"],
    }
    if m is not None and not m["meets_target"]:
        log.warning("the final model MISSES the target when measured: p%g %.2f ms > %g ms",
                    workload.percentile, m["at_percentile_ms"]["chosen"], s.latency_ms)
    return summary


def _latency_line(label: str, m: dict[str, Any], target: float) -> str:
    q = m["percentile"]
    at = m["at_percentile_ms"]
    verdict = "meets the target" if at["chosen"] <= target else "**MISSES the target**"
    ref = (f"; dense PyTorch fp32 {m['reference_ms']['median_ms']:.2f} ms "
           f"({m['speedup_vs_reference']:.2f}x)" if m.get("reference_ms") else "")
    return (f"- {label}: **p{q:g} {at['chosen']:.2f} ms**, median "
            f"{m['chosen_ms']['median_ms']:.2f} ms; dense on the same backend "
            f"{m['dense_ms']['median_ms']:.2f} ms ({m['speedup_vs_dense']:.2f}x){ref}; "
            f"prediction error {m['error_pct']:+.1f}% "
            f"({'median' if m['workload'] == 'max' else f'p{q:g}'}); {verdict}")


def render_report(d: dict[str, Any]) -> str:
    w, m = d["workload"], d.get("measured")
    trunc = f"truncated to {d['max_len']} tokens" if d["max_len"] else "not truncated"
    lines = [f"# tp-search run: {d['target_ms']:g} ms on {d['machine']}", "",
             f"- Task: {d['task']}; method: {d['method']}",
             f"- Target: measured p{w['percentile']:g} latency <= {d['target_ms']:g} ms; "
             f"search and training aimed at {d['planning_target_ms']:.2f} ms predicted "
             f"({d['margin']:.0%} margin for predictor error)",
             f"- Workload: {w['note']}; {w['threads']} thread(s), {w['device']}",
             f"- Deployed: backend **{d['backend']}**, input {trunc}: `{d['model_dir']}` "
             f"(load with `pruning.load(path)` or `tp-bench --model {d['model_dir']}`)",
             f"- Configuration: {d['config']['policy']} "
             f"{d['config'].get('keep') or d['config'].get('thresholds') or ''}",
             f"- Dev {d['metric']}: **{d['dev_metric']:.4f}** on {d['backend']} "
             f"(PyTorch fp32 of the same model {d['dev_metric_torch_fp32']:.4f}; fp32 teacher "
             f"at full length **{d['teacher_dev_metric']:.4f}**, {d['dev_examples']} examples)",
             f"- Predicted latency: {d['predicted_ms']:.2f} ms (dense on {d['backend']} "
             f"{d['predicted_dense_ms']:.2f} ms)"]
    if m:
        lines.append(_latency_line("Measured latency", m, d["target_ms"]))
        for kind, other in d.get("measured_other_workload", {}).items():
            lines.append(_latency_line(f"Also measured on the {kind} workload "
                                       f"({other['workload_note']})", other, d["target_ms"]))
    else:
        lines.append("- Measured latency: not measured here (planned for another machine)")
    r = d["macs_reduction"]
    lines += [f"- MACs reduction on dev: {r['real_lengths']:.2f}x vs each example's real "
              f"length, {r['padded_to_max_len']:.2f}x vs padding to {w['seq_len']}", "",
              "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {st['name']} | {st['status']} | {st['seconds']:.1f} |"
              for st in d.get("stages", [])]
    total = sum(st["seconds"] for st in d.get("stages", []))
    lines += [f"| total | | {total:.1f} |", ""]
    return "\n".join(lines)
