"""The main job: profile -> teacher -> ranking distillation -> search -> train -> measure.

``tp-search --latency-ms 20 --device cpu`` runs all of it on the built-in default
(all-MiniLM-L6-v2, rotten_tomatoes). Every stage writes into the run directory (the teacher
and the distilled student into a cache shared by runs of the same task and model, since they
do not depend on the target) and is reused when the same command runs again, so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from tp_search.profiler.fingerprint import fingerprint
from tp_search.profiler.store import load_predictor
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import task_spec
from tp_search.pruning.runtime import REFERENCE
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.model.checkpoint import from_pretrained, resolve_model_dir
from tp_search.pruning.train import (
    DistillSettings,
    FinetuneSettings,
    LtpSettings,
    TopSettings,
    distill,
    finetune,
    prune_ltp,
    prune_top,
)
from tp_search.pruning.train.train_settings import finished

from tp_search.search.pipeline.final import final_report, render_report
from tp_search.search.pipeline.profiling import backends, ensure_tables, has_tables
from tp_search.search.run import run_search
from tp_search.search.search_settings import SearchResult, SearchSettings, default_out_dir

log = logging.getLogger("tp.pipeline")

METHODS = ("top", "ltp")


@dataclass
class PipelineSettings:
    search: SearchSettings
    method: str = "top"
    train: bool = True  # False: stop after the search
    teacher: str | None = None  # an already fine-tuned teacher: skip fine-tuning
    cache: str | None = None  # teacher/student cache (default runs/<task>-<model>/)
    finetune_epochs: float | None = None  # None: the stage's default
    distill_epochs: float | None = None
    prune_epochs: float | None = None
    max_steps: int | None = None  # cap every training stage (smoke runs, tests)
    train_eval_samples: int = 0  # dev examples the training stages evaluate (0 = all)
    final_eval_samples: int = 0  # dev examples for the final metric (0 = all)
    profile_max_len: int | None = None  # auto-profiling grid end (default: the workload)
    train_max_len: int | None = None  # training stages' truncation (default: the task's budget)
    rank_weight: float | None = None  # ranking distillation's alpha (0: logit distillation only)
    # Search and training aim at target * (1 - margin): the predictor is off by a few %
    # (validated p90 |error| 4% on MiniLM, up to -8% seen on chosen configs) and the
    # promise is a *measured* latency under the target.
    margin: float = 0.05


@dataclass
class StageRecord:
    name: str
    seconds: float
    status: str  # ran / reused / skipped
    output: str = ""


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")[:60]


class _Stages:
    """Times each stage, logs it, and keeps ``stages.json`` current in the run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.records = run_dir, []

    def run(self, name: str, fn: Callable[[], Any], reused: Callable[[], bool] = lambda: False
                ) -> Any:
        was_done = reused()
        log.info("== stage %s%s", name, " (reusing finished output)" if was_done else "")
        t0 = time.perf_counter()
        out = fn()
        rec = StageRecord(name, round(time.perf_counter() - t0, 1),
                          "reused" if was_done else "ran",
                          str(out) if isinstance(out, (str, Path)) else "")
        self.records.append(rec)
        log.info("== stage %s: %s in %.1f s", name, rec.status, rec.seconds)
        self.save()
        return out

    def skip(self, name: str, why: str) -> None:
        self.records.append(StageRecord(name, 0.0, "skipped", why))
        log.info("== stage %s: skipped (%s)", name, why)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.run_dir / "stages.json",
                          json.dumps([asdict(r) for r in self.records], indent=2) + "\n")


def run_pipeline(p: PipelineSettings) -> PipelineResult:
    s = p.search
    if not 0 <= p.margin < 0.5:
        raise TpError(f"--margin {p.margin}: must be in [0, 0.5)")
    if p.method not in METHODS:
        raise TpError(f"unknown --method {p.method!r}; choose one of {', '.join(METHODS)}")
    spec = task_spec(s.task)
    model_dir = resolve_model_dir(s.model)
    model_label = _slug(model_dir.name if s.model else "all-MiniLM-L6-v2")
    base = from_pretrained(model_dir, num_labels=spec.num_labels, tokenizer=False)
    seq_len = min(s.seq_len or spec.max_len, base.config.max_len)
    if s.out:
        run_dir = Path(s.out)
    else:
        run_dir = default_out_dir(_slug(Path(s.task).name), model_label,
                                  list(s.machines) or [fingerprint(s.device).machine_id],
                                  s.latency_ms, s.min_macs_reduction)
    run_dir.mkdir(parents=True, exist_ok=True)
    # the teacher and student do not depend on the target: runs of one tree share them
    runs_root = run_dir if s.out else run_dir.parent
    cache = Path(p.cache) if p.cache else runs_root / "cache" / _slug(
        f"{Path(s.task).name}-{model_label}-seed{s.seed}")
    stages = _Stages(run_dir)
    result = PipelineResult(run_dir)
    log.info("run directory %s (teacher/student cache %s)", run_dir, cache)

    # 1. latency tables, one per backend searched
    s = replace(s, backends=backends(s))
    stages.run("profile", lambda: ensure_tables(s, base.shape, p.profile_max_len or seq_len),
               lambda: has_tables(s, base.shape, p.profile_max_len or seq_len))

    machine = s.machines[0] if s.machines else None
    predictor = load_predictor(base.shape, s.device, machine, s.threads, s.batch, s.results)
    budget = spec.budget  # the task's default spend; flags override each part
    train_len = min(seq_len, p.train_max_len or budget.train_max_len or seq_len)
    common = dict(task=s.task, seed=s.seed, device=s.device, max_len=train_len,
                  max_steps=p.max_steps, eval_samples=p.train_eval_samples,
                  progress=s.progress, machine=s.machines[0] if s.machines else None,
                  results=s.results, threads=s.threads)

    def epochs(v: float | None, default: float = budget.epochs) -> dict[str, float]:
        return {"epochs": default if v is None else v}

    # 2. teacher
    if p.teacher:
        teacher = str(resolve_model_dir(p.teacher))
        stages.skip("finetune", f"--teacher {teacher}")
    else:
        ft = FinetuneSettings(model=str(model_dir), out=str(cache / "finetune"),
                              **common, **epochs(p.finetune_epochs, budget.finetune_epochs))
        teacher = str(stages.run("finetune", lambda: finetune(ft, predictor),
                                 lambda: finished(cache / "finetune")) / "model")
    # 3. ranking distillation -> the proxy model and the student
    ranking = {} if p.rank_weight is None else {"rank_weight": p.rank_weight}
    distill_dir = cache / ("distill" if p.rank_weight is None else f"distill-rank{p.rank_weight:g}")
    ds = DistillSettings(model=teacher, teacher=teacher, out=str(distill_dir), **common,
                         **ranking, **epochs(p.distill_epochs))
    student = str(stages.run("distill", lambda: distill(ds, predictor),
                             lambda: finished(distill_dir)) / "model")
    # 4. search on the distilled student, aiming under the target by the margin
    plan_ms = s.latency_ms * (1 - p.margin)
    # the proxy evaluation is throughput work: all cores (latency is only predicted there)
    # a candidate that prunes nothing is scored (and deployed) as the teacher itself: only
    # pruning candidates need the student's training
    ss = replace(s, model=student, proxy_model=student, dense_model=teacher,
                 out=str(run_dir / "search"),
                 seq_len=seq_len, latency_ms=plan_ms,
                 eval_threads=s.eval_threads or os.cpu_count() or 1)
    sr: SearchResult = stages.run("search", lambda: run_search(ss))
    best = run_dir / "search" / "best_config.json"
    choice = sr.primary.candidate  # backend and truncation come with the schedule
    trained = predictor if choice.backend == REFERENCE else load_predictor(
        base.shape, s.device, machine, s.threads, s.batch, s.results, choice.backend)
    length = sr.workload.length(choice.max_len)  # the workload's request length, truncated
    # the final training sees inputs as deployed (the budget's train_len is for the
    # teacher and student, whose stages do not depend on the choice)
    train_common = {**common, "max_len": choice.max_len or seq_len, "seq_len": length}
    # 5. final training of the chosen configuration
    final_dir: str
    if not p.train:
        stages.skip("train", "--no-train")
        final_dir = student
    elif sr.status == "dense" or choice.config.is_dense:  # nothing to train: the teacher
        stages.skip("train", "the dense model already meets the target" if sr.status == "dense"
                    else f"the chosen candidate prunes no token ({choice.describe()}): the "
                         "teacher is deployed on it")
        final_dir = teacher
    else:
        latency = plan_ms if not s.machines or len(s.machines) == 1 else None
        if p.method == "top":
            # one training directory per searched configuration and target: a rerun with
            # another target never reuses a model trained for this one
            chosen = PruningConfig.load(best)  # its meta holds timings that vary per run
            tag = hashlib.sha1(f"{chosen.keep}{latency}{choice.backend}{choice.max_len}"
                               .encode()).hexdigest()[:8]
            top_dir = run_dir / f"train-top-{tag}"
            ts = TopSettings(model=student, teacher=teacher, config=str(best),
                             latency_ms=latency, out=str(top_dir), **train_common, **ranking,
                             **epochs(p.prune_epochs))
            out = stages.run("train", lambda: prune_top(ts, trained),
                             lambda: finished(top_dir))
        else:
            ls = LtpSettings(model=student, teacher=teacher, latency_ms=latency,
                             out=str(run_dir / "train-ltp"), **train_common,
                             **epochs(p.prune_epochs))
            out = stages.run("train", lambda: prune_ltp(ls, trained),
                             lambda: finished(run_dir / "train-ltp"))
        final_dir = str(Path(out) / "model")
    # 6. deploy on the chosen backend and measure
    here = machine is None or machine == sr.here_id
    static = not p.train or sr.status == "dense" or choice.config.is_dense
    config = sr.primary.config if static else None
    summary = stages.run("measure", lambda: final_report(
        s, choice, final_dir, teacher, run_dir, sr.workload, here, p.final_eval_samples, config))
    summary.update(planning_target_ms=plan_ms, margin=p.margin,
                   method="static" if static else p.method,
                   search={"proxy_metric": sr.primary.metric, "predicted_ms": sr.primary.latency_ms,
                           "backend": choice.backend, "max_len": choice.max_len,
                           "status": sr.status, "out": str(sr.out_dir)})
    result.stages, result.summary = stages.records, summary
    summary["stages"] = [asdict(r) for r in stages.records]
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    atomic_write_text(run_dir / "report.md", render_report(summary))
    return result
