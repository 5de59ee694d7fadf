"""The main job's last stage: deploy the trained model on its chosen backend, then report
its dev metric (with the backend's numerics and truncation) against the fp32 teacher at
full length, with the paired bootstrap interval of the difference, and its latency
measured on both workloads against the target.

The deployed directory is what gets timed: ``tp_search.load(RUN/model)`` runs it exactly as
a user would. A trained schedule that measures over the target is not deployed: the
schedule the closed loop measured within it is, on the trained weights, and measured again.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tp_search.profiler.store import load_predictor
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import load_task, metrics, real_lengths
from tp_search.pruning.macs import counts_reduction, dense_macs, reductions
from tp_search.pruning.measure.accuracy import EvalResult, evaluate
from tp_search.pruning.measure.bootstrap import paired_difference
from tp_search.pruning.measure.calibration_data import calibration_batches
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.model.encoder import ForwardInfo
from tp_search.pruning.runtime import REFERENCE, get_backend
from tp_search.pruning.runtime.deploy import deploy, load_runner
from tp_search.search.pipeline.summary import Accuracy, FinalSummary
from tp_search.search.scoring.proxy import ProxyEvaluator
from tp_search.search.search_settings import SearchSettings
from tp_search.search.selection.verify import Measurement, measure
from tp_search.search.space.candidates import Candidate, schedule_key
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


def _deploy(s: SearchSettings, model: Any, c: Candidate, path: Path, workload: Workload,
            metric: str) -> Any:
    calib = (calibration_batches(model.tokenizer, load_task(s.task, "train"), workload.seq_len)
             if get_backend(c.backend).calibrated else None)
    deploy(model, c.config, c.backend, path, c.max_len, s.threads, task=s.task, metric=metric,
           seq_len=workload.seq_len, calibration=calib)
    return load_runner(path)


def _measure(s: SearchSettings, model: Any, runner: Any, c: Candidate, pred: Any, dev: Any,
             w: Workload) -> Measurement:
    dense = PruningConfig.dense(model.shape)
    runners = {"chosen": (runner, c.max_len),
               "dense": (get_backend(c.backend).build(model, dense, threads=s.threads), 0)}
    if c.backend != REFERENCE:
        runners["reference"] = (get_backend(REFERENCE).build(model, dense, threads=s.threads), 0)
    return measure(runners, model, dev, w, pred, c.config, s.latency_ms, s.threads,
                   repeats=max(s.repeats, 30), device=s.device, seed=s.seed)


def final_report(s: SearchSettings, choice: Candidate, model_dir: str, teacher_dir: str,
                 run_dir: Path, workload: Workload, here: bool, eval_samples: int = 0,
                 config: PruningConfig | None = None, verified: PruningConfig | None = None,
                 max_loss: float = 1.0) -> FinalSummary:
    """Deploy ``model_dir`` (with ``config`` if given) as ``choice`` says; measure it.
    ``verified``: the schedule the closed loop measured within the target, deployed on
    the same weights instead when the trained one measures over it."""
    torch.set_num_threads(os.cpu_count() or 1)  # evaluation: throughput; measure() sets its own
    model = from_pretrained(model_dir)
    if config is not None:
        model.set_pruning(config)
    c = Candidate(choice.backend, choice.max_len, model.pruning)
    dev = load_task(s.task, "dev")
    ev_split = dev.subset(eval_samples, s.seed) if eval_samples else dev
    metric_name = metrics.primary(dev.task.metric)
    deployed = run_dir / "model"
    machine = s.machines[0] if s.machines else None
    pred = load_predictor(model.shape, s.device, machine, s.threads, s.batch, s.results,
                          backend=c.backend)
    runner = _deploy(s, model, c, deployed, workload, metric_name)
    measured: dict[str, Measurement] = {}
    fallback = None
    if here:
        m = _measure(s, model, runner, c, pred, dev, workload)
        if not m.meets_target and verified is not None and \
                schedule_key(verified) != schedule_key(c.config):
            fallback = (f"the trained schedule {schedule_key(c.config)} measured "
                        f"p{m.percentile:g} {m.chosen_ms:.2f} ms > {s.latency_ms:g} ms; "
                        f"deployed the schedule the closed loop measured within the target, "
                        f"{schedule_key(verified)}, on the trained weights instead")
            log.warning(fallback)
            model.set_pruning(verified)
            c = Candidate(c.backend, c.max_len, model.pruning)
            runner = _deploy(s, model, c, deployed, workload, metric_name)
            m = _measure(s, model, runner, c, pred, dev, workload)
        measured[workload.kind] = m
        other = replace(workload, kind="dev" if workload.kind == "max" else "max")
        measured[other.kind] = _measure(s, model, runner, c, pred, dev, other)
    accuracy = dev_accuracy(s, model, runner, c, teacher_dir, ev_split, workload, max_loss)
    cfg = c.config
    real = real_lengths(model.tokenizer, ev_split, workload.seq_len)
    if cfg.policy == "threshold":  # input-dependent counts: measured by the encoder
        r = accuracy.reference_result  # on the inputs truncated to max_len; the baseline not
        real_red = counts_reduction(model.shape, list(zip(r.lengths, r.kept)), real)
        padded = real_red * len(real) * dense_macs(workload.seq_len, model.shape) / sum(
            dense_macs(n, model.shape) for n in real)
    else:
        padded, real_red = reductions(cfg, real, workload.seq_len, c.max_len)
    m = measured.get(workload.kind)
    if m is not None and not m.meets_target:
        log.warning("the final model MISSES the target when measured: p%g %.2f ms > %g ms",
                    workload.percentile, m.chosen_ms, s.latency_ms)
    return FinalSummary(
        target_ms=s.latency_ms, task=s.task, machine=pred.machine_id, model_dir=str(deployed),
        backend=c.backend, max_len=c.max_len,
        workload={**workload.to_dict(), "threads": s.threads, "device": s.device},
        config=cfg.to_dict(), accuracy=accuracy,
        predicted_ms=(m.predicted_ms if m is not None else
                      predicted_latency(pred, model, cfg, workload, c.max_len, dev, s.seed)),
        predicted_dense_ms=workload.predict(pred, PruningConfig.dense(model.shape)),
        macs_reduction={"real_lengths": real_red, "padded_to_max_len": padded},
        measured={k: v.to_dict() | {"workload_note": (workload if k == workload.kind else
                                                      replace(workload, kind=k)).describe()}
                  for k, v in measured.items()},
        workload_kind=workload.kind, fallback=fallback)


def dev_accuracy(s: SearchSettings, model: Any, runner: Any, c: Candidate, teacher_dir: str,
                 split: Any, workload: Workload, max_loss: float) -> Accuracy:
    """The deployed numerics' and the PyTorch fp32 reference's dev metric, each against the
    fp32 teacher at full length on the same examples (paired bootstrap)."""
    proxy = ProxyEvaluator(model, split, workload.seq_len, runner_for=lambda *_: runner)
    n = proxy.length(c)
    reference = evaluate(model, split, n, progress=s.progress)
    deployed: EvalResult = reference if c.backend == REFERENCE else \
        proxy.runner_result(runner, c)
    teacher = from_pretrained(teacher_dir)
    t = evaluate(teacher, split, workload.seq_len, pruning=PruningConfig.dense(teacher.shape),
                 progress=s.progress)
    metric = split.task.metric
    return Accuracy(
        metric=reference.primary, deployed=deployed.score, reference=reference.score,
        teacher=t.score, examples=len(split), max_loss=max_loss,
        vs_teacher=paired_difference(metric, deployed.preds, t.preds, t.labels, seed=s.seed),
        reference_vs_teacher=paired_difference(metric, reference.preds, t.preds, t.labels,
                                               seed=s.seed),
        reference_result=reference)
