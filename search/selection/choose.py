"""A machine's choice as the search reports it: the chosen entry, what it was predicted and
measured to do, what the plan allowed, and everything the deployed configuration records.
Also the refusal of targets no candidate of the space can meet."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import InfeasibleError
from tp_search.pruning.macs import counts_reduction, dense_macs, reductions
from tp_search.pruning.runtime import REFERENCE, spec
from tp_search.search.context import Context, model_label
from tp_search.search.result import MachineChoice
from tp_search.search.scoring.objective import Checker, expected_latency
from tp_search.search.search_settings import SearchSettings
from tp_search.search.selection.closed_loop import LoopRound
from tp_search.search.selection.entries import Scored
from tp_search.search.selection.halving import Rescored
from tp_search.search.selection.verify import Measurement
from tp_search.search.space.candidates import Candidate
from tp_search.search.space.planning import Plan
from tp_search.search.space.workload import per_request


def dense_latency(ctx: Context, checker: Checker, machine: str, backend: str) -> float:
    return checker.latency(machine, Candidate(backend, 0, PruningConfig.dense(ctx.shape)))


def reference_latency(ctx: Context, checker: Checker, machine: str) -> float | None:
    """Dense PyTorch fp32 at full length: what speedups were stated against before."""
    ms = dense_latency(ctx, checker, machine, REFERENCE)
    return None if ms == float("inf") else ms


def macs_of(c: Candidate, ctx: Context, checker: Checker) -> dict[str, float]:
    if c.adaptive:  # the counts it kept on the workload's inputs
        reqs, base = ctx.counts(c), ctx.counts.dense_lengths(c)
        real = counts_reduction(ctx.shape, reqs, base)
        padded = real * dense_macs(ctx.seq_len, ctx.shape) * len(reqs) / sum(
            dense_macs(n, ctx.shape) for n in base)
        return {"workload": checker.macs_reduction(c), "padded": padded, "real": real}
    padded, real = reductions(c.config, Counter(ctx.lengths), ctx.seq_len, c.max_len)
    return {"workload": checker.macs_reduction(c), "padded": padded, "real": real}


def expected_of(ctx: Context, predictor: Any, c: Candidate) -> float | None:
    """Mean predicted latency over the dev inputs' lengths; for an adaptive candidate,
    over the requests whose kept counts it was planned with."""
    if c.adaptive:
        return float(np.mean(per_request(predictor, c.config, ctx.counts(c))))
    return expected_latency(predictor, c.config, ctx.lengths, c.max_len)


def machine_choice(s: SearchSettings, ctx: Context, checker: Checker, machine: str,
                   entry: Scored, fastest_ms: float, plan: Plan, dense_metric: float,
                   study: str | None = None, rescored: Rescored | None = None,
                   rounds: Sequence[LoopRound] = (), measurement: Measurement | None = None,
                   note: str = "") -> MachineChoice:
    c = entry.candidate
    p = ctx.predictors[machine][c.backend]
    lat = entry.latency_ms[machine]
    exp = expected_of(ctx, p, c)
    dense_exp = expected_latency(p, PruningConfig.dense(ctx.shape), ctx.lengths)
    dense_ms = dense_latency(ctx, checker, machine, c.backend)
    macs = macs_of(c, ctx, checker)
    meta = {"machine_id": machine, "target_ms": s.latency_ms,
            "min_macs_reduction": s.min_macs_reduction,
            "deployment": {"backend": c.backend, "max_len": c.max_len,
                           "precision": spec(c.backend).precision, "threads": s.threads},
            "workload": {**ctx.workload.to_dict(), "threads": s.threads, "device": s.device},
            "predicted_latency_ms": lat, "limit_ms": plan.limit_ms, "plan": plan.to_dict(),
            "expected_latency_ms_dev": exp, "dense_latency_ms": dense_ms,
            "proxy_metric": {"name": ctx.evaluator.metric, "value": entry.metric,
                             "dense": dense_metric, "eval_samples": len(ctx.split),
                             "slice": "held-out train examples",
                             "rescored": None if rescored is None else rescored.metric,
                             "rescored_examples": None if rescored is None
                             else rescored.examples,
                             "note": "static top-k, no retraining, with the backend's "
                                     "numerics and truncation"},
            "macs_reduction": macs, "seed": s.seed, "task": ctx.task_name,
            "model": model_label(ctx.model_dir), "trial": entry.number, "study": study}
    if measurement is not None:
        meta["measured"] = measurement.to_dict()
    cfg = (PruningConfig.dense(ctx.shape, **meta) if c.config.is_dense
           else replace(c.config, method="search", meta=meta))  # top-k or thresholds
    resc = None if rescored is None else {
        "metric": rescored.metric, "examples": rescored.examples,
        "search_metric": rescored.search_metric, "vs_dense": rescored.vs_dense.to_dict()}
    return MachineChoice(machine, dense_ms, fastest_ms, cfg, lat, entry.metric, macs,
                         entry.number, exp, dense_exp, measurement=measurement,
                         measure_note=note, backend=c.backend, max_len=c.max_len,
                         reference_ms=reference_latency(ctx, checker, machine),
                         limit_ms=plan.limit_ms, plan=plan.to_dict(), rescored=resc,
                         rounds=list(rounds))


def check_feasible(s: SearchSettings, ctx: Context, checker: Checker,
                   fast: dict[str, tuple[Candidate, float]]) -> None:
    """Refuse a target below what the space can reach on some machine (exit code 3)."""
    topk = "topk" in ctx.space.policies  # the fastest schedule is a top-k one
    slow = {m: f for m, f in fast.items() if topk and not checker(f[0]).feasible[m]
            and f[1] > checker.limit(m, f[0].backend)}
    if slow:
        parts = [f"{f[1]:.3f} ms on {m} ({f[0].describe()}; its plan allows "
                 f"{checker.limit(m, f[0].backend):.3f} ms for a {s.latency_ms:g} ms "
                 f"p{s.percentile:g} target)" for m, f in slow.items()]
        raise InfeasibleError(
            f"--latency-ms {s.latency_ms:g} is below the fastest achievable latency: "
            f"{'; '.join(parts)}, for {ctx.workload.describe(short=True)}, {s.threads} "
            "thread(s); raise the target or lower --seq-len")
    if ctx.space.policies == ("threshold",):
        check_thresholds(s, ctx, checker)
    if s.min_macs_reduction:
        most = Candidate(ctx.space.backends[0], min(ctx.space.lengths, key=lambda n: n or 1e9),
                         ctx.space.chain())
        top = checker.macs_reduction(most)
        if top < s.min_macs_reduction:
            raise InfeasibleError(
                f"--macs-reduction {s.min_macs_reduction:g} is above the largest MACs "
                f"reduction of the search space at the workload: {top:.2f}x "
                f"({most.describe()})")


def most_aggressive(ctx: Context) -> list[Candidate]:
    """The threshold family's most aggressive members at the shortest length, per backend
    and start layer: each keeps the fewest tokens of any member with its start. Every start,
    not only the first: a layer that scores tokens costs more than a plain one, so a later
    start that keeps more may still be faster."""
    shortest = min(ctx.space.lengths, key=lambda n: n or 1e9)
    return [Candidate(b, shortest, ctx.space.aggressive(st)) for b in ctx.space.backends
            for st in ctx.space.starts]


def check_thresholds(s: SearchSettings, ctx: Context, checker: Checker) -> None:
    """Refuse (exit code 3) a threshold-only search whose fastest member misses the plan on
    some machine: one forward pass over the latency inputs instead of a hundred trials."""
    cands = most_aggressive(ctx)
    for m in checker.predictors:
        lat = [(checker.latency(m, c), c) for c in cands]
        if any(t <= checker.limit(m, c.backend) for t, c in lat):
            continue
        t, c = min(lat, key=lambda x: x[0])
        raise InfeasibleError(
            f"--latency-ms {s.latency_ms:g} is below what thresholds can reach on {m}: the "
            f"family's fastest most aggressive member ({c.describe()}) is predicted "
            f"{t:.3f} ms for {ctx.workload.describe(short=True)} against a plan "
            f"of {checker.limit(m, c.backend):.3f} ms; raise the target, or use --method top")


def not_measured(s: SearchSettings, ctx: Context, machine: str) -> str:
    if not s.measure:
        return "measurement skipped (--no-measure)"
    return (f"{machine} is another machine (this one is {ctx.here_id}); measure there with "
            "tp-bench --config")


def missed_message(s: SearchSettings, machine: str, rounds: Sequence[LoopRound]) -> str:
    last = rounds[-1]
    best = min(last.candidates, key=lambda m: m.at_percentile_ms)
    return (f"no candidate measured within {s.latency_ms:g} ms at p{s.percentile:g} on "
            f"{machine} after {len(rounds)} round(s) of measuring and refitting (fastest "
            f"measured: {best.label}, p{s.percentile:g} {best.at_percentile_ms:.2f} ms; "
            f"machine tail {', '.join(f'{b.backend} {b.tail:.2f}x' for b in last.backends)})"
            "; raise the target, or run on a quieter machine")


def summary_of(entries: Sequence[Scored]) -> dict[str, Any]:
    n = len(entries)
    ev = sum(e.metric is not None for e in entries)
    return {"complete": n, "evaluated": ev}
