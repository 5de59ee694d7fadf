"""One process's session on a study: open (or join, or resume) the record, seed a new study,
score each lever alone, and run trials until the record holds enough — again after the
closed loop refitted the predictions, under the new constraint."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.runtime.registry import numerics, spec
from tp_search.search.context import Context, identity
from tp_search.search.scoring.objective import (
    PESSIMISTIC,
    Check,
    Checker,
    Objective,
    fastest_schedule,
    metric_key,
)
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.candidates import Candidate
from tp_search.search.study.record import Entry, Record
from tp_search.search.study.storage import redact, storage_url
from tp_search.search.study.trial_loop import derived_seed, open_study, run_id, run_trials
from tp_search.search.study.working_study import WorkStudy

log = logging.getLogger("tp.search")

# (theta_rel, slope) of the first threshold trials: LTP's ramp and flat thresholds, light
# to hard (the family's most aggressive member is checked before any trial, choose.py)
THRESHOLD_SEEDS = ((0.5, 1.0), (2.0, 1.0), (8.0, 1.0), (0.5, 0.0), (1.0, 0.0), (2.0, 0.0),
                   (4.0, 0.0), (2.0, 0.5))


def remember_counts(ctx: Context, attrs: dict[str, Any]) -> None:
    """A recorded threshold trial's kept counts, back into the search's cache."""
    if attrs.get("policy") == "threshold" and attrs.get("requests"):
        cfg = PruningConfig.threshold(ctx.shape, attrs["thresholds"], method="search")
        ctx.counts.remember(Candidate(attrs["backend"], int(attrs.get("max_len", 0)), cfg),
                            attrs["requests"])


class StudySession:
    def __init__(self, s: SearchSettings, ctx: Context, checker: Checker, out_dir: Path,
                 fast: dict[str, tuple[Candidate, float]]) -> None:
        self.s, self.ctx = s, ctx
        self.url = storage_url(s.storage, out_dir)
        if not s.storage:  # the default SQLite file lives in the output directory
            out_dir.mkdir(parents=True, exist_ok=True)
        ident = identity(s, ctx)
        self.name = s.study_name or f"tp-search-{ctx.task_name}-" + hashlib.sha1(
            json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        # a bad --storage fails here, before any write
        self.study, created = open_study(self.url, self.name, ident)
        out_dir.mkdir(parents=True, exist_ok=True)
        run = run_id()
        self.record = Record(self.study, ctx.space, run)
        known = sorted(self.record.pull(), key=lambda e: e.key)
        self.sampler_seed = s.seed if created else derived_seed(s.seed, len(known), run)
        self.work = WorkStudy(ctx.space, self.sampler_seed, s.population)
        self.objective = Objective(ctx.space, checker, ctx.evaluator, self.sampler_seed)
        for e in known:
            self.objective.remember(e.attrs)
            remember_counts(ctx, e.attrs)
        self.work.migrate(known)
        log.info("%s study %s in %s: %d trials recorded, %d to go (sampler seed %d)",
                 "created" if created else "resumed", self.name, redact(self.url),
                 len(known), max(0, s.trials - len(known)), self.sampler_seed)
        self.references = references(ctx, checker, self.objective, self.study)
        full = ctx.space.lengths[0]  # the longest length searched (0: not truncated)
        self.dense_metric = next((r["metric"] for r in self.references
                                  if r["max_len"] == full
                                  and spec(r["backend"]).precision == "fp32"),
                                 self.references[0]["metric"])
        self.ran = 0
        if not known:
            self._seed(checker, fast)

    def _seed(self, checker: Checker, fast: dict[str, tuple[Candidate, float]]) -> None:
        """The fastest candidates first (a feasible trial exists from the start), then
        every feasible single-lever point, then each (backend, length)'s fastest schedule."""
        s, ctx = self.s, self.ctx
        seeds: list[Candidate] = []
        if "topk" in ctx.space.policies:
            seeds += [f[0] for f in fast.values()]
            if s.min_macs_reduction:
                seeds.append(Candidate(ctx.space.backends[0], 0, ctx.space.chain()))
            dense = PruningConfig.dense(ctx.shape)
            seeds += [c for c in ctx.space.candidates(dense) if checker(c).any_feasible
                      and not s.min_macs_reduction]
            seeds += anchors(ctx, checker)
        if "threshold" in ctx.space.policies:  # LTP's family across its range, per backend
            seeds += [Candidate(b, ctx.space.lengths[0], ctx.space.threshold_config(*t))
                      for b in ctx.space.backends for t in THRESHOLD_SEEDS]
        for c in dict.fromkeys(seeds):  # in order, once each
            self.work.enqueue(ctx.space.candidate_params(c))

    def run(self, total: int, checker: Checker | None = None) -> None:
        """Trials until the record holds ``total`` (all runs and workers together); with a
        ``checker`` (refitted limits) NSGA-II restarts from the record judged by it."""
        if checker is not None:
            self.objective.checker = checker
            self.rejudge(checker)
            if "topk" in self.ctx.space.policies:  # the refitted limits' fastest points
                for c in anchors(self.ctx, checker):
                    self.work.enqueue(self.ctx.space.candidate_params(c))
        self.ran += run_trials(self.work, self.record, self.objective, total, self.s.progress)

    def rejudge(self, checker: Checker) -> None:
        """A fresh working study holding every recorded trial with the objectives and
        constraint values ``checker`` gives it: parents are selected under the new plan."""
        from tp_search.search.selection.entries import scored  # (selection sits above)
        entries = self.entries()
        judged = []
        for e, sc in zip(entries, scored(entries, checker)):
            lat = sc.latency_ms[self.objective.primary]
            check = checker(sc.candidate)
            metric = (float(sc.metric) if check.any_feasible and sc.metric is not None
                      else PESSIMISTIC)  # feasible only now: its metric was never sent
            system = dict(e.system)
            system["constraints"] = list(check.constraints)
            judged.append(replace(e, values=(metric, min(lat, 1e9)), system=system))
        self.work = WorkStudy(self.ctx.space, self.sampler_seed + 1, self.s.population)
        self.work.migrate(judged)

    def entries(self) -> list[Entry]:
        self.record.pull()  # other workers' last trials, record numbers of ours
        return self.record.sorted_entries()

    def stats(self, scored: list[Any]) -> dict[str, int]:
        feasible = sum(any(e.feasible.values()) for e in scored)
        o = self.objective
        return {"complete": len(scored), "feasible": feasible, "infeasible": len(scored) - feasible,
                "evaluated": sum(e.evaluated != "skipped" for e in scored),
                "run_trials": self.ran, "evaluations": o.evaluations,
                "cache_hits": o.cache_hits, "skipped": o.skipped}

    def sampler_seeds(self, scored: list[Any]) -> list[int]:
        return sorted({int(e.sampler_seed) for e in scored if e.sampler_seed is not None}
                      | {self.sampler_seed})


def references(ctx: Context, checker: Checker, objective: Objective, study: Any
               ) -> list[dict[str, Any]]:
    """The dense model on every backend at every truncation length: what runtime,
    precision or truncation achieves alone. Evaluated once per study (kept in its user
    attributes, so a resume does not redo them); their metrics seed the objective's cache."""
    stored = {r["key"]: r for r in study.user_attrs.get("references", [])}
    out, dense = [], PruningConfig.dense(ctx.shape)
    for i, c in enumerate(ctx.space.candidates(dense)):
        r = stored.get(c.key)
        if r is None:
            check = checker(c)
            metric = objective.metric(c)[0] if scored(c, check, i) else None
            r = {"key": c.key, "backend": c.backend, "max_len": c.max_len,
                 "metric_key": metric_key(c), "latency_ms": check.latency_ms,
                 "feasible": check.feasible, "metric": metric}
        objective.remember(r)
        out.append(r)
    study.set_user_attr("references", out)
    return out


def scored(c: Candidate, check: Check, index: int) -> bool:
    """Whether a lever alone gets a proxy metric: when it is feasible (it may be chosen),
    when it is fp32 (one PyTorch evaluation per length serves every fp32 backend: what
    truncation alone costs), and the first (the dense reference). An infeasible int8 or bf16
    point costs a full evaluation on its own runtime (10 of the 25 lever evaluations of the
    main job on the Zen 3 host, at up to 512 tokens) for a number no choice uses: reported
    as n/a. A lever that becomes feasible later is still evaluated as a trial."""
    return check.any_feasible or numerics(c.backend) == "fp32" or index == 0


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
