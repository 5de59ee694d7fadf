"""``run_search``: the whole ``tp-search --search-only`` command without its CLI.

It resolves the inputs, plans each backend's limit for the percentile target (its tail,
its validated error), refuses impossible targets, scores the dense model alone when it
already meets the plan, otherwise runs (or resumes) the NSGA-II search until
``settings.trials`` trials are in the study's record (all runs and workers together). On
this machine it then measures the contenders before choosing (``selection/closed_loop``),
refitting and searching again when none meets the target; other machines get the most
accurate candidate their tables predict within the plan. Outputs are written either way; a
target no contender met raises ``InfeasibleError`` (exit code 3) after them.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tp_search.profiler.store import save_refit
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import InfeasibleError, TpError
from tp_search.pruning.runtime.registry import spec
from tp_search.search.context import Context, model_label, prepare
from tp_search.search.reports.outputs import write_outputs
from tp_search.search.result import MachineChoice, SearchResult
from tp_search.search.scoring.objective import Checker, fastest
from tp_search.search.scoring.proxy import RunnerFor
from tp_search.search.search_settings import SearchSettings, default_out_dir
from tp_search.search.selection import closed_loop
from tp_search.search.selection.choose import (
    check_feasible,
    dense_latency,
    expected_of,
    machine_choice,
    missed_message,
    not_measured,
)
from tp_search.search.selection.entries import Scored, best, ranked, scored
from tp_search.search.selection.halving import contenders, rescore
from tp_search.search.selection.verify import (
    Measurement,
    per_request_rows,
    predicted_requests,
)
from tp_search.search.space.candidates import Candidate
from tp_search.search.space.planning import Plan, plans_for
from tp_search.search.study.session import StudySession
from tp_search.search.study.storage import redact

log = logging.getLogger("tp.search")


def run_search(s: SearchSettings, runner_for: RunnerFor | None = None) -> SearchResult:
    """Run (or resume) the search of ``s``; write the outputs; return what was chosen.
    ``runner_for(backend)`` evaluates candidates of other numerics (see ``proxy.py``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(s.eval_threads or s.threads)  # restored below
    try:
        return _run_search(s, runner_for)
    finally:
        torch.set_num_threads(before)


def make_checker(s: SearchSettings, ctx: Context, plans: dict[str, dict[str, Plan]]
                 ) -> Checker:
    limits = {m: {b: p.limit_ms for b, p in bp.items()} for m, bp in plans.items()}
    return Checker(ctx.predictors, s.latency_ms, ctx.workload, s.min_macs_reduction, limits,
                   ctx.counts)


def _run_search(s: SearchSettings, runner_for: RunnerFor | None) -> SearchResult:
    if not 0 <= s.margin < 0.5:
        raise TpError(f"--margin {s.margin}: must be in [0, 0.5)")
    ctx = prepare(s, runner_for)
    plans = plans_for(ctx.predictors, s.latency_ms, s.percentile, s.margin)
    checker = make_checker(s, ctx, plans)
    fast = {m: fastest(ctx.space, p, ctx.workload) for m, p in ctx.predictors.items()}
    for m, preds in ctx.predictors.items():
        dense = {b: dense_latency(ctx, checker, m, b) for b in preds}
        log.info("%s: dense %s; fastest in the space %.3f ms (%s); target %g ms (%s); plan %s",
                 m, ", ".join(f"{b} {t:.3f} ms" for b, t in dense.items()), fast[m][1],
                 fast[m][0].describe(), s.latency_ms, ctx.workload.describe(short=True),
                 "; ".join(f"{b} <= {p.limit_ms:.2f} ms" for b, p in plans[m].items()))
    check_feasible(s, ctx, checker, fast)
    ids = list(ctx.predictors)
    out_dir = Path(s.out) if s.out else default_out_dir(
        ctx.task_name, model_label(ctx.model_dir), ids, s.latency_ms, s.min_macs_reduction)
    common = dict(settings=s, out_dir=out_dir, task=ctx.task_name,
                  model=model_label(ctx.model_dir), proxy_model=model_label(ctx.proxy_dir),
                  metric_name=ctx.evaluator.metric, seq_len=ctx.seq_len, n_eval=len(ctx.split),
                  mean_length=sum(ctx.lengths) / len(ctx.lengths), space=ctx.space,
                  workload=ctx.workload, here_id=ctx.here_id,
                  results_dir=str(s.results or "results"),
                  proxy={"slice": "held-out train examples (never trained on, never dev)",
                         "search_examples": len(ctx.split), "pool_examples": len(ctx.pool)})
    fp32 = [b for b in ctx.space.backends if spec(b).precision == "fp32"]
    dense_meets = all(any(checker(Candidate(b, 0, PruningConfig.dense(ctx.shape))).feasible[m]
                          for b in fp32) for m in ids)
    session = None
    if dense_meets and not s.always_search and not (s.min_macs_reduction and
                                                     s.min_macs_reduction > 1):
        log.info("the dense fp32 model already meets the plan on %s: no search needed",
                 ", ".join(ids))
        entries, dense_metric, status = dense_entries(ctx, checker, fp32), None, "dense"
        dense_metric = entries[0].metric
    else:
        session = StudySession(s, ctx, checker, out_dir, fast)
        session.run(s.trials)
        entries, dense_metric, status = scored(session.entries(), checker), \
            session.dense_metric, "searched"
    choices, missed = [], None
    for m in ids:
        if m == ctx.here_id and s.measure:
            c, entries, checker = verified_choice(s, ctx, checker, plans, entries, m, fast,
                                                  dense_metric, session)
            if c.rounds and c.rounds[-1].chosen is None:
                missed = missed_message(s, m, c.rounds)
        else:
            e = best(entries, m)
            if e is None:
                raise InfeasibleError(
                    f"no trial met the constraints on {m} (fastest {fast[m][1]:.3f} ms, plan "
                    f"{plans[m][fast[m][0].backend].limit_ms:.2f} ms for the {s.latency_ms:g} "
                    "ms target): run more --trials or relax the target")
            c = machine_choice(s, ctx, checker, m, e, fast[m][1], plans[m][e.candidate.backend],
                               dense_metric, session.name if session else None,
                               note=not_measured(s, ctx, m))
        choices.append(c)
    result = SearchResult(
        "missed" if missed else status, dense_metric=dense_metric, choices=choices,
        study_name=session.name if session else None,
        storage=None if session is None else redact(session.url),
        entries=entries, stats={} if session is None else session.stats(entries),
        sampler_seeds=[] if session is None else session.sampler_seeds(entries),
        references=[] if session is None else session.references, lengths=ctx.lengths,
        expected=lambda m, e: expected_of(ctx, ctx.predictors[m][e.candidate.backend],
                                          e.candidate), **common)
    if missed and status == "dense":  # the dense model measured over: search the space
        log.warning("%s; searching the space under the refitted plan", missed)
        result.files = write_outputs(result)  # what stays when the search writes nothing
        try:
            return _run_search(replace(s, always_search=True), runner_for)
        except InfeasibleError as e:  # keep what the dense pass measured, and say both
            raise InfeasibleError(f"{missed}; then the search under the refitted plan: {e}"
                                  ) from e
    result.files = write_outputs(result)
    if missed:
        raise InfeasibleError(missed + f" (report: {out_dir / 'report.md'})")
    c = result.primary
    log.info("chosen for %s: %s, predicted %.3f ms (plan %.2f ms, target %g ms), proxy %s "
             "%.4f (dense %.4f); outputs in %s", c.machine_id, c.candidate.describe(),
             c.latency_ms, c.limit_ms, s.latency_ms, result.metric_name, c.metric,
             result.dense_metric, out_dir)
    return result


def dense_entries(ctx: Context, checker: Checker, backends: list[str]) -> list[Scored]:
    """The dense model on each fp32 backend at full length, scored once (the same numerics):
    the candidates when it already meets the plan."""
    dense = PruningConfig.dense(ctx.shape)
    metric = float(ctx.evaluator(Candidate(backends[0], 0, dense)))
    out = []
    for i, b in enumerate(backends):
        c = Candidate(b, 0, dense)
        chk = checker(c)
        out.append(Scored(i, "dense", i, None, c, metric, "yes", None, {}, chk.latency_ms,
                          chk.feasible, chk.macs_reduction))
    return out


def verified_choice(s: SearchSettings, ctx: Context, checker: Checker,
                    plans: dict[str, dict[str, Plan]], entries: list[Scored], machine: str,
                    fast: dict[str, tuple[Candidate, float]], dense_metric: float,
                    session: StudySession | None) -> tuple[MachineChoice, list[Scored], Checker]:
    """The closed loop on this machine: contenders re-scored, measured, chosen; refit and
    search again (``s.refits`` times) while none meets the target."""
    pool = ctx.evaluator.on(ctx.pool)
    rounds: list[closed_loop.LoopRound] = []
    chosen = None
    for number in range(s.refits + 1):
        top = contenders(ranked(entries, machine), len(ctx.split))
        if not top and not rounds:
            raise InfeasibleError(
                f"no trial met the plan on {machine} ({fast[machine][1]:.3f} ms fastest): "
                "run more --trials or relax the target")
        if not top:  # the refitted plan rules out every candidate: nothing to measure
            log.warning("after refitting, no candidate is predicted within the plan on %s",
                        machine)
            break
        resc = rescore(top, pool, machine)
        rnd, window = closed_loop.measure_contenders(
            resc[:s.verify], checker, machine, ctx.model, ctx.dev, s.latency_ms, s.threads,
            s.repeats, number, s.device, s.seed, margin=s.margin)
        rounds.append(rnd)
        chosen = closed_loop.chosen_candidate(rnd, resc)
        if chosen is not None or number == s.refits:
            break
        new = closed_loop.refit(rnd, checker, machine, s.latency_ms, s.margin)
        for b in new:
            save_refit(checker.predictors[machine][b], {
                "correction": checker.predictors[machine][b].correction,
                "tail": new[b].tail, "percentile": s.percentile, "round": number,
                "workload": ctx.workload.kind})
        plans[machine].update(new)
        checker = make_checker(s, ctx, plans)
        if session is not None:  # search again under the refitted limits
            session.run(session.record.complete() + max(20, s.trials // 2), checker)
            entries = scored(session.entries(), checker)
        else:
            entries = dense_entries(ctx, checker, [e.candidate.backend for e in entries])
    pick = chosen or resc[0]
    e = pick.entry
    measurement = loop_measurement(rounds[-1], window, e, s, ctx, checker, machine)
    note = ("measured on this machine: the most accurate contender within the target"
            if chosen else "MEASURED OVER THE TARGET after every refit: not deployable")
    c = machine_choice(s, ctx, checker, machine, e, fast[machine][1],
                       plans[machine][e.candidate.backend], dense_metric,
                       session.name if session else None, rescored=pick, rounds=rounds,
                       measurement=measurement, note=note)
    return c, entries, checker


def loop_measurement(rnd: closed_loop.LoopRound, window: Any, e: Scored, s: SearchSettings,
                     ctx: Context, checker: Checker, machine: str) -> Measurement:
    """The chosen contender's timing in the loop's last window, beside its backend's dense
    model, as a ``Measurement``."""
    c = e.candidate
    chosen, dense = window.timed[c.key], window.timed[f"dense {c.backend}"]
    q = ctx.workload.percentile
    per = predicted_requests(checker.predictors[machine][c.backend], ctx.model, c.config,
                             window.feeds[c.key], chosen.lengths)
    return Measurement({"chosen": chosen.timing(), "dense": dense.timing()},
                       {"chosen": chosen.at(q), "dense": dense.at(q)}, q,
                       e.latency_ms[machine], dense_latency(ctx, checker, machine, c.backend),
                       s.latency_ms, window.rounds, ctx.workload.kind, spread=dense.tail(q),
                       per_request=per_request_rows(chosen, per))
