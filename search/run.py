"""``run_search``: the whole ``tp-search --search-only`` command without its CLI.

It resolves the inputs, refuses impossible targets, returns the dense model when it already
meets the target, otherwise runs (or resumes) the NSGA-II search until ``settings.trials``
trials are finished in the study's record (all runs and workers together), chooses one
configuration per machine, measures it where it can, and writes the outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.runtime.registry import spec

from tp_search.search.selection.choices import check_feasible, dense_choices, dense_latency, measure_choices, searched_choices
from tp_search.search.context import Context, identity, model_label, prepare
from tp_search.search.study.trial_loop import derived_seed, open_study, run_id, run_trials
from tp_search.search.scoring.objective import (
    Checker,
    Objective,
    expected_latency,
    fastest,
    fastest_schedule,
    metric_key,
)
from tp_search.search.scoring.proxy import RunnerFor
from tp_search.search.study.record import Record
from tp_search.search.reports.markdown import write_outputs
from tp_search.search.search_settings import SearchResult, SearchSettings, default_out_dir
from tp_search.search.space.candidates import Candidate
from tp_search.search.study.storage import redact, storage_url
from tp_search.search.reports.tables import pareto_table, trials_table
from tp_search.search.study.working_study import WorkStudy

log = logging.getLogger("tp.search")


def references(ctx: Context, checker: Checker, objective: Objective, study: Any
               ) -> list[dict[str, Any]]:
    """The dense model on every backend at every truncation length: what runtime,
    precision or truncation achieves alone. Evaluated once per study (kept in its user
    attributes, so a resume does not redo them); their metrics seed the objective's cache."""
    stored = {r["key"]: r for r in study.user_attrs.get("references", [])}
    out, dense = [], PruningConfig.dense(ctx.shape)
    for c in ctx.space.candidates(dense):
        r = stored.get(c.key)
        if r is None:
            check = checker(c)
            metric, _ = objective.metric(c)
            r = {"key": c.key, "backend": c.backend, "max_len": c.max_len,
                 "metric_key": metric_key(c), "latency_ms": check.latency_ms,
                 "feasible": check.feasible, "metric": metric}
        objective.remember(r)
        out.append(r)
    study.set_user_attr("references", out)
    return out


def anchors(ctx: Context, checker: Checker) -> list[Candidate]:
    """The fastest schedule at every (backend, truncation) that meets the target: without
    them NSGA-II crowds around the globally fastest point (measured: 49 of 100 trials at the
    shortest length on BBC News) and rarely tries the longer inputs that keep accuracy."""
    out = []
    machine = next(iter(ctx.predictors))
    for b, p in ctx.predictors[machine].items():
        if b not in ctx.space.backends:
            continue
        for n in ctx.space.lengths:
            c = Candidate(b, n, fastest_schedule(ctx.space, p, ctx.workload.length(n)))
            if checker(c).any_feasible:
                out.append(c)
    return out


def _search(s: SearchSettings, ctx: Context, checker: Checker, out_dir: Path,
            fast: dict[str, tuple[Candidate, float]], common: dict[str, Any]) -> SearchResult:
    url = storage_url(s.storage, out_dir)
    if not s.storage:  # the default SQLite file lives in the output directory
        out_dir.mkdir(parents=True, exist_ok=True)
    ident = identity(s, ctx)
    name = s.study_name or f"tp-search-{ctx.task_name}-" + hashlib.sha1(
        json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    study, created = open_study(url, name, ident)  # a bad --storage fails before any write
    out_dir.mkdir(parents=True, exist_ok=True)
    run = run_id()
    record = Record(study, ctx.space, run)
    known = sorted(record.pull(), key=lambda e: e.key)
    sampler_seed = s.seed if created else derived_seed(s.seed, len(known), run)
    work = WorkStudy(ctx.space, sampler_seed, s.population)
    objective = Objective(ctx.space, checker, ctx.evaluator, sampler_seed)
    for e in known:
        objective.remember(e.attrs)
    work.migrate(known)
    log.info("%s study %s in %s: %d trials recorded, %d to go (sampler seed %d)",
             "created" if created else "resumed", name, redact(url), len(known),
             max(0, s.trials - len(known)), sampler_seed)
    refs = references(ctx, checker, objective, study)
    dense_metric = next(r["metric"] for r in refs
                        if r["max_len"] == 0 and spec(r["backend"]).precision == "fp32")
    if not known:  # the fastest candidates first: a feasible trial exists from the start;
        seeds = [f[0] for f in fast.values()]  # then every feasible single-lever point,
        if s.min_macs_reduction:  # then each (backend, length)'s fastest schedule
            seeds.append(Candidate(ctx.space.backends[0], 0, ctx.space.chain()))
        dense = PruningConfig.dense(ctx.shape)
        seeds += [c for c in ctx.space.candidates(dense) if checker(c).any_feasible
                  and not s.min_macs_reduction]
        seeds += anchors(ctx, checker)
        for c in dict.fromkeys(seeds):  # in order, once each
            work.enqueue(ctx.space.candidate_params(c))
    ran = run_trials(work, record, objective, s.trials, s.progress)
    record.pull()  # other workers' last trials, record numbers of ours
    entries = record.sorted_entries()
    ids = list(ctx.predictors)
    df = trials_table(entries, ctx.space, ids, ctx.lengths, ctx.seq_len)
    choices = searched_choices(s, ctx, checker, df, fast, dense_metric, name)

    def expected(machine: str, backend: str, max_len: int, key: str) -> float | None:
        p = ctx.predictors[machine].get(backend)
        keep = [float(k) for k in key.split(",")]
        return None if p is None else expected_latency(
            p, PruningConfig.topk(ctx.shape, keep), ctx.lengths, max_len)
    feasible = df[[c for c in df.columns if c.startswith("feasible")]].eq(True).any(axis=1)
    stats = {"complete": int(len(df)), "feasible": int(feasible.sum()),
             "infeasible": int((~feasible).sum()),
             "evaluated": int((df["evaluated"] != "skipped").sum()), "run_trials": ran,
             "evaluations": objective.evaluations, "cache_hits": objective.cache_hits,
             "skipped": objective.skipped}
    seeds_used = sorted({int(x) for x in df["sampler_seed"].dropna()} | {sampler_seed})
    return SearchResult("searched", dense_metric=dense_metric, choices=choices,
                        study_name=name, storage=redact(url), trials=df,
                        pareto=pareto_table(df, ids, expected), stats=stats,
                        sampler_seeds=seeds_used, references=refs, **common)


def run_search(s: SearchSettings, runner_for: RunnerFor | None = None) -> SearchResult:
    """Run (or resume) the search of ``s``; write the outputs; return what was chosen.
    ``runner_for(precision)`` evaluates non-fp32 candidates (see ``proxy.py``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(s.eval_threads or s.threads)  # restored below
    try:
        return _run_search(s, runner_for)
    finally:
        torch.set_num_threads(before)


def _run_search(s: SearchSettings, runner_for: RunnerFor | None) -> SearchResult:
    ctx = prepare(s, runner_for)
    checker = Checker(ctx.predictors, s.latency_ms, ctx.workload, s.min_macs_reduction)
    fast = {m: fastest(ctx.space, p, ctx.workload) for m, p in ctx.predictors.items()}
    for m, preds in ctx.predictors.items():
        dense = {b: dense_latency(ctx, checker, m, b) for b in preds}
        log.info("%s: dense %s; fastest in the space %.3f ms (%s); target %g ms (%s)", m,
                 ", ".join(f"{b} {t:.3f} ms" for b, t in dense.items()), fast[m][1],
                 fast[m][0].describe(), s.latency_ms, ctx.workload.describe(short=True))
    check_feasible(s, ctx, checker, fast)
    ids = list(ctx.predictors)
    out_dir = Path(s.out) if s.out else default_out_dir(
        ctx.task_name, model_label(ctx.model_dir), ids, s.latency_ms, s.min_macs_reduction)
    common = dict(settings=s, out_dir=out_dir, task=ctx.task_name,
                  model=model_label(ctx.model_dir), proxy_model=model_label(ctx.proxy_dir),
                  metric_name=ctx.evaluator.metric, seq_len=ctx.seq_len, n_eval=len(ctx.split),
                  mean_length=sum(ctx.lengths) / len(ctx.lengths), space=ctx.space,
                  workload=ctx.workload, here_id=ctx.here_id,
                  results_dir=str(s.results or "results"))
    fp32 = [b for b in ctx.space.backends if spec(b).precision == "fp32"]
    dense_meets = all(any(dense_latency(ctx, checker, m, b) <= s.latency_ms for b in fp32)
                      for m in ids)
    if dense_meets and not s.always_search and not (s.min_macs_reduction and
                                                     s.min_macs_reduction > 1):
        log.info("the dense fp32 model already meets the target on %s: no search needed",
                 ", ".join(ids))
        dense_metric = ctx.evaluator(Candidate(fp32[0], 0, PruningConfig.dense(ctx.shape)))
        result = SearchResult("dense", dense_metric=dense_metric,
                              choices=dense_choices(s, ctx, checker, fast, dense_metric),
                              **common)
    else:
        result = _search(s, ctx, checker, out_dir, fast, common)
    measure_choices(s, ctx, result.choices)
    result.files = write_outputs(result)
    c = result.primary
    log.info("chosen for %s: %s, predicted %.3f ms (target %g ms), proxy %s %.4f "
             "(dense %.4f); outputs in %s", c.machine_id, c.candidate.describe(),
             c.latency_ms, s.latency_ms, result.metric_name, c.metric, result.dense_metric,
             out_dir)
    return result
