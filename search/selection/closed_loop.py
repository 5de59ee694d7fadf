"""Measure before deploying: the predictor narrows the space, measurement decides.

After the search, the contenders (``halving``: the feasible candidates within the proxy's
noise of the best, re-scored on the whole held-out slice) are timed on their own backends,
interleaved with each other and with the dense model of each backend, on the workload,
and judged at its percentile, with the margin kept below the target (one window's p90 is
an estimate). The most accurate one that *measures* within it is chosen. When none does, each backend's prediction is refitted from these measurements
(real full passes on this machine, request by request: measured median over predicted)
and its tail replaced by the one measured in this window; the caller then searches again,
a bounded number of times, and stops with exit code 3 when still none measures within the
target. A configuration measured to miss is never chosen.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.runtime import get_backend
from tp_search.search.scoring.objective import Checker
from tp_search.search.selection.halving import Rescored
from tp_search.search.selection.verify import Window, predicted_requests, time_runners
from tp_search.search.space.candidates import Candidate
from tp_search.search.space.planning import Plan, plan, validated_error

log = logging.getLogger("tp.search")


@dataclass(frozen=True)
class MeasuredCandidate:
    key: str
    label: str
    trial: int
    backend: str
    metric: float  # on the whole held-out slice
    search_metric: float
    vs_dense_points: tuple[float, float, float]  # (diff, low, high) x100 vs the teacher
    predicted_ms: float  # the table's prediction at the workload (median-like)
    limit_ms: float  # what the plan allowed that prediction
    median_ms: float
    at_percentile_ms: float
    meets: bool
    workload: str = "max"

    @property
    def error_pct(self) -> float:
        """As ``Measurement.error_pct``: against the median (max workload) or the
        percentile request (dev workload, predicted at the percentile's length)."""
        ref = self.median_ms if self.workload == "max" else self.at_percentile_ms
        return 100.0 * (self.predicted_ms - ref) / ref


@dataclass(frozen=True)
class BackendWindow:
    backend: str
    dense_median_ms: float
    dense_at_percentile_ms: float
    tail: float  # the dense runner's percentile over its median in this window
    correction: float  # measured median / predicted, over this backend's runners


@dataclass
class LoopRound:
    number: int
    target_ms: float
    percentile: float
    candidates: list[MeasuredCandidate]
    backends: list[BackendWindow]
    seconds: float
    chosen: str | None = None  # key of the most accurate candidate that met the target
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # after the refit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_contenders(contenders: Sequence[Rescored], checker: Checker, machine: str,
                       model: Any, split: Any, target_ms: float, threads: int, repeats: int,
                       number: int, device: str = "cpu", seed: int = 0, margin: float = 0.0
                       ) -> tuple[LoopRound, Window]:
    """Time ``contenders`` with each backend's dense model, interleaved. A contender meets
    the target when its measured percentile is within ``target x (1 - margin)``: one window
    of a few dozen rounds estimates a p90 only so well, and the deployed model is measured
    again later, in another window."""
    wl = checker.workload
    picked = list(contenders)
    bar = target_ms * (1.0 - margin)
    runners, dense_of = {}, {}
    for r in picked:
        c = r.entry.candidate
        runners[c.key] = (get_backend(c.backend).build(model, c.config, threads=threads),
                          c.max_len)
    for b in dict.fromkeys(r.entry.candidate.backend for r in picked):
        dense_of[b] = f"dense {b}"
        runners[dense_of[b]] = (get_backend(b).build(model, PruningConfig.dense(model.shape),
                                                     threads=threads), 0)
    log.info("measuring %d contender(s) with the dense model of %s, interleaved on the "
             "workload (round %d)", len(picked), ", ".join(dense_of), number)
    w = time_runners(runners, model, split, wl, threads, repeats, device=device, seed=seed)
    q = wl.percentile
    measured = []
    for r in picked:
        e, c = r.entry, r.entry.candidate
        t = w.timed[c.key]
        d = r.vs_dense
        measured.append(MeasuredCandidate(
            c.key, c.describe(), e.number, c.backend, r.metric, r.search_metric,
            (100 * d.diff, 100 * d.low, 100 * d.high), e.latency_ms[machine],
            checker.limit(machine, c.backend), t.median_ms, t.at(q), t.at(q) <= bar, wl.kind))
    backends = [BackendWindow(b, w.timed[name].median_ms, w.timed[name].at(q),
                              w.timed[name].tail(q),
                              correction(w, checker, machine, b, picked, model))
                for b, name in dense_of.items()]
    met = [m for m in measured if m.meets]
    best = max(met, key=lambda m: (m.metric, m.median_ms), default=None)
    return LoopRound(number, target_ms, q, measured, backends, round(w.seconds, 1),
                     None if best is None else best.key), w


def correction(w: Window, checker: Checker, machine: str, backend: str,
               picked: Sequence[Rescored], model: Any) -> float:
    """Measured median over predicted, request by request, over ``backend``'s runners in
    ``w`` (its contenders and its dense model)."""
    pred = checker.predictors[machine][backend]
    dense = PruningConfig.dense(checker.shape)
    runs = [(r.entry.candidate.key, r.entry.candidate.config) for r in picked
            if r.entry.candidate.backend == backend] + [(f"dense {backend}", dense)]
    ratios = []
    for name, cfg in runs:
        t = w.timed[name]
        ratios.append(t.ratio_to(predicted_requests(pred, model, cfg, w.feeds[name],
                                                    t.lengths)))
    return float(np.median(ratios))


def refit(rnd: LoopRound, checker: Checker, machine: str, target_ms: float, margin: float
          ) -> dict[str, Plan]:
    """Apply a round's measurements to ``machine``'s predictors (their correction) and
    return the new plans of the measured backends (the window's tail)."""
    plans = {}
    for bw in rnd.backends:
        pred = checker.predictors[machine][bw.backend]
        pred.correction *= bw.correction
        tail = max(bw.tail, pred.tail(rnd.percentile))  # one window is one sample
        plans[bw.backend] = plan(target_ms, rnd.percentile, margin, tail,
                                 validated_error(pred))
        log.info("%s on %s: predictions x%.3f (measured/predicted), p%g tail %.3f (window "
                 "%.3f) -> plan %s", bw.backend, machine, bw.correction, rnd.percentile, tail,
                 bw.tail,
                 plans[bw.backend].describe())
    rnd.plans = {b: p.to_dict() for b, p in plans.items()}
    return plans


def chosen_candidate(rnd: LoopRound, contenders: Sequence[Rescored]) -> Rescored | None:
    return next((r for r in contenders if r.entry.candidate.key == rnd.chosen), None)


def candidate_of(r: Rescored) -> Candidate:
    return r.entry.candidate
