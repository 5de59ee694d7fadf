"""The main job: profile -> teacher -> ranking distillation -> search (measured before
choosing) -> train -> deploy and measure.

``tp-search --latency-ms 20 --device cpu`` runs all of it on the built-in default
(all-MiniLM-L6-v2, bbc_news, 512 tokens). Every input is checked before the first stage.
The run's directory belongs to its settings (``run_dir.py``); every stage writes into it (the
teacher and the distilled student into a cache shared by runs of the same task, model,
training settings and held-out slice) and is reused when the same command runs again, so an
interrupted run resumes where it stopped. A target no candidate measures within stops the
job after the search with exit code 3 and a report saying so: nothing is trained or
deployed then.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tp_search.profiler.fingerprint import fingerprint
from tp_search.profiler.store import load_predictor
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.core.cpu import resolve_precision
from tp_search.pruning.core.errors import InfeasibleError, TpError
from tp_search.pruning.data import task_spec
from tp_search.pruning.model.checkpoint import from_pretrained, resolve_model_dir
from tp_search.pruning.model.digest import checkpoint_digest
from tp_search.pruning.runtime import REFERENCE
from tp_search.pruning.train import DistillSettings, FinetuneSettings, distill, finetune
from tp_search.pruning.train.train_settings import finished
from tp_search.search.pipeline import run_dir as runs
from tp_search.search.pipeline.checks import check_inputs
from tp_search.search.pipeline.final import final_report
from tp_search.search.pipeline.profiling import backends, ensure_tables, has_tables
from tp_search.search.pipeline.stages import Stages
from tp_search.search.pipeline.training import train_choice
from tp_search.search.result import SearchResult
from tp_search.search.run import run_search
from tp_search.search.search_settings import SearchSettings, default_out_dir

log = logging.getLogger("tp.pipeline")

METHODS = ("top", "ltp", "auto")
POLICIES = {"top": ("topk",), "ltp": ("threshold",), "auto": ("topk", "threshold")}


@dataclass
class PipelineSettings:
    search: SearchSettings
    method: str = "top"
    train: bool = True  # False: stop after the search
    teacher: str | None = None  # an already fine-tuned teacher: skip fine-tuning
    cache: str | None = None  # teacher/student cache (default runs/cache/<task>-<model>...)
    finetune_epochs: float | None = None  # None: the stage's default
    distill_epochs: float | None = None
    prune_epochs: float | None = None
    max_steps: int | None = None  # cap every training stage (smoke runs, tests)
    train_eval_samples: int = 0  # dev examples the training stages evaluate (0 = all)
    final_eval_samples: int = 0  # dev examples for the final metric (0 = all)
    profile_max_len: int | None = None  # auto-profiling grid end (default: the workload)
    train_max_len: int | None = None  # training stages' truncation (default: the task's budget)
    rank_weight: float | None = None  # ranking distillation's alpha (0: logit distillation only)
    train_precision: str = "auto"  # bf16 autocast where the CPU has native bf16
    max_loss: float = 1.0  # points: the accuracy verdict's "within X points"


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[Any] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")[:60]


def identity(p: PipelineSettings, resolved: dict[str, Any], model_dir: Path,
             label: str, machines: list[str]) -> dict[str, Any]:
    """Every setting that changes the run's result, the input checkpoints' content too."""
    s = p.search
    return {"task": s.task, "model_label": label, "model": checkpoint_digest(model_dir),
            "teacher": checkpoint_digest(resolve_model_dir(p.teacher)) if p.teacher else None,
            "machines": machines, "latency_ms": s.latency_ms, "seq_len": resolved["seq_len"],
            "workload": s.workload, "percentile": s.percentile, "batch": s.batch,
            "threads": s.threads, "device": s.device, "backends": list(s.backends),
            "truncation": resolved["truncation"], "min_macs_reduction": s.min_macs_reduction,
            "layers": list(s.layers), "ratios": [s.min_ratio, s.max_ratio, s.floor],
            "trials": s.trials, "population": s.population, "seed": s.seed,
            "eval_samples": s.eval_samples, "holdout": resolved["holdout"], "margin": s.margin,
            "verify": s.verify, "refits": s.refits, "method": p.method, "train": p.train,
            "epochs": [p.finetune_epochs, p.distill_epochs, p.prune_epochs],
            "train_max_len": resolved["train_max_len"], "rank_weight": p.rank_weight,
            "max_steps": p.max_steps, "train_precision": resolve_precision(p.train_precision),
            "final_eval_samples": p.final_eval_samples, "max_loss": p.max_loss}


def run_pipeline(p: PipelineSettings) -> PipelineResult:
    s = p.search
    if p.method not in METHODS:
        raise TpError(f"unknown --method {p.method!r}; choose one of {', '.join(METHODS)}")
    spec = task_spec(s.task)
    model_dir = resolve_model_dir(s.model)
    label = _slug(model_dir.name if s.model else "all-MiniLM-L6-v2")
    base = from_pretrained(model_dir, num_labels=spec.num_labels, tokenizer=False)
    s = replace(s, backends=backends(s))
    p = replace(p, search=s)  # the identity names the backends resolved, as the defaults'
    resolved = check_inputs(p, spec, base.config.max_len, base.shape)
    seq_len, holdout = resolved["seq_len"], resolved["holdout"]
    machines = list(s.machines) or [fingerprint(s.device).machine_id]
    ident = identity(p, resolved, model_dir, label, machines)
    if s.out:
        run_dir = Path(s.out)
    else:
        d = SearchSettings(s.latency_ms, task=s.task, model=s.model, machines=s.machines,
                           results=s.results)
        dp = PipelineSettings(replace(d, backends=backends(d)))
        defaults = identity(dp, check_inputs(dp, spec, base.config.max_len, base.shape),
                            model_dir, label, machines)
        run_dir = runs.default_name(default_out_dir(_slug(Path(s.task).name), label, machines,
                                                    s.latency_ms, s.min_macs_reduction),
                                    ident, defaults)
    runs.claim(run_dir, ident, explicit=bool(s.out))
    # the teacher and student do not depend on the target: runs of one tree share them,
    # keyed by what decides them (task, model, seed, held-out slice, training length)
    runs_root = run_dir if s.out else run_dir.parent
    train_len = resolved["train_max_len"]
    cache = Path(p.cache) if p.cache else runs_root / "cache" / _slug(
        f"{Path(s.task).name}-{label}-seed{s.seed}-h{holdout}-n{train_len}")
    stages = Stages(run_dir)
    log.info("run directory %s (teacher/student cache %s)", run_dir, cache)

    # 1. latency tables, one per backend searched
    stages.run("profile", lambda: ensure_tables(s, base.shape, p.profile_max_len or seq_len),
               lambda: has_tables(s, base.shape, p.profile_max_len or seq_len))
    machine = s.machines[0] if s.machines else None
    predictor = load_predictor(base.shape, s.device, machine, s.threads, s.batch, s.results)
    budget = spec.budget  # the task's default spend; flags override each part
    common = dict(task=s.task, seed=s.seed, device=s.device, max_len=train_len,
                  max_steps=p.max_steps, eval_samples=p.train_eval_samples,
                  progress=s.progress, machine=machine, results=s.results, threads=s.threads,
                  holdout=holdout, precision=p.train_precision)

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
    # 4. search on the distilled student; candidates that prune nothing are scored (and
    # deployed) as the teacher itself. The proxy evaluation is throughput work: all cores.
    ss = replace(s, model=student, proxy_model=student, dense_model=teacher,
                 out=str(run_dir / "search"), seq_len=seq_len, holdout=holdout,
                 policies=POLICIES[p.method],
                 eval_threads=s.eval_threads or os.cpu_count() or 1)
    try:
        sr: SearchResult = stages.run("search", lambda: run_search(ss))
    except InfeasibleError as e:  # nothing measured within the target: stop, say so
        stopped(run_dir, stages, s, str(e))
        raise
    choice = sr.primary
    # 5. final training of the chosen configuration
    final_dir, static = train_choice(p, s, sr, stages, run_dir, student, teacher, common,
                                     ranking, epochs(p.prune_epochs), base.shape, machine,
                                     seq_len)
    # 6. deploy on the chosen backend and measure
    here = machine is None or machine == sr.here_id
    summary = stages.run("measure", lambda: final_report(
        s, choice.candidate, final_dir, teacher, run_dir, sr.workload, here,
        p.final_eval_samples, choice.config if static else None,
        verified=None if static else choice.config, max_loss=p.max_loss))
    summary.method = "static" if static else ("ltp" if choice.candidate.adaptive else "top")
    summary.plan = choice.plan
    summary.search = {"proxy_metric": choice.metric, "predicted_ms": choice.latency_ms,
                      "limit_ms": choice.limit_ms, "backend": choice.backend,
                      "max_len": choice.max_len, "status": sr.status, "out": str(sr.out_dir),
                      "rescored": choice.rescored}
    summary.closed_loop = [r.to_dict() for r in choice.rounds]
    summary.train_precision = resolve_precision(p.train_precision)
    summary.stages = stages.to_list()
    d = summary.to_dict() | {"run_dir": str(run_dir)}
    atomic_write_text(run_dir / "summary.json", json.dumps(d, indent=2, default=float) + "\n")
    atomic_write_text(run_dir / "report.md", summary.render_markdown())
    return PipelineResult(run_dir, stages.records, d)


def stopped(run_dir: Path, stages: Stages, s: SearchSettings, why: str) -> None:
    """The report of a job the closed loop stopped (exit code 3)."""
    stages.skip("train", "no candidate measured within the target")
    lines = [f"# tp-search run: {s.latency_ms:g} ms — STOPPED, nothing deployed", "",
             f"- {why}"]
    search_report = run_dir / "search" / "report.md"
    if search_report.exists():
        lines.append(f"- The search's report, with every candidate measured: `{search_report}`")
    lines += ["", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {st.name} | {st.status} | {st.seconds:.1f} |" for st in stages.records]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(run_dir / "summary.json", json.dumps(
        {"status": "stopped", "reason": why, "target_ms": s.latency_ms,
         "stages": [asdict(r) for r in stages.records]}, indent=2) + "\n")


__all__ = ["METHODS", "PipelineResult", "PipelineSettings", "REFERENCE", "run_pipeline"]
