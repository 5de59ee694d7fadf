"""Finished trials as typed entries, and every choice made on them: what is feasible on a
machine, the ranking, the best one, the Pareto front, the nearest alternatives.

The one place a configuration is chosen. Latency and feasibility are recomputed from the
current predictors (a prediction costs microseconds), so an entry recorded before the
closed loop refitted a table is judged by the refitted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from tp_search.pruning.config import PruningConfig
from tp_search.search.scoring.objective import Checker, metric_key
from tp_search.search.space.candidates import Candidate, schedule_key


@dataclass(frozen=True)
class Scored:
    """One finished trial: the candidate, its proxy metric, its predictions per machine."""

    number: int  # position in the record's stable order
    run: str
    index: int
    record: int | None  # Optuna trial number of an evaluated trial
    candidate: Candidate
    metric: float | None  # proxy metric on the search's slice (None: not evaluated)
    evaluated: str  # "yes", "cache" or "skipped"
    sampler_seed: int | None
    params: dict[str, Any]
    latency_ms: dict[str, float]  # per machine, predicted at the workload
    feasible: dict[str, bool]  # per machine
    macs_reduction: float  # at the workload

    @property
    def key(self) -> str:
        return self.candidate.key


def scored(entries: Iterable[Any], checker: Checker) -> list[Scored]:
    """Typed entries from the record's (``study.record.Entry``, in its stable order)."""
    out = []
    for number, e in enumerate(entries):
        a = e.attrs
        shape = checker.shape
        keep = tuple(float(k) for k in a["keep"])
        if a.get("policy") == "threshold":
            cfg = PruningConfig.threshold(shape, a["thresholds"], method="search")
        elif all(k >= 1.0 for k in keep):
            cfg = PruningConfig.dense(shape)
        else:
            cfg = PruningConfig.topk(shape, keep)
        c = Candidate(a["backend"], int(a.get("max_len", 0)), cfg)
        check = checker(c)
        out.append(Scored(number, e.run, e.index, e.record, c, a.get("metric"),
                          a.get("evaluated", "skipped"), a.get("sampler_seed"),
                          dict(e.params), check.latency_ms, check.feasible,
                          check.macs_reduction))
    return out


def feasible(entries: Sequence[Scored], machine: str) -> list[Scored]:
    """Evaluated entries that meet the constraints on ``machine``, one per candidate."""
    seen, out = set(), []
    for e in entries:
        if e.feasible.get(machine) and e.metric is not None and e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out


def ranked(entries: Sequence[Scored], machine: str) -> list[Scored]:
    """Feasible entries, most accurate first; ties go to the *slower* one, then the earlier.

    A proxy on a few hundred examples of an easy task ties often (BBC News: many candidates
    at the subset's best accuracy); the slower of tied candidates pruned or truncated less,
    so it spends the latency budget on accuracy the proxy cannot resolve. (Measured: with
    ties to the faster, the main job chose a 7 ms candidate for a 19 ms plan and lost 1.3
    points on the full dev set.) Candidates with the same numerics, truncation and schedule
    on different backends (PyTorch, ONNX Runtime and OpenVINO fp32) are the same model:
    only the fastest of them is ranked."""
    fastest: dict[str, Scored] = {}
    for e in feasible(entries, machine):
        k = metric_key(e.candidate)
        if k not in fastest or e.latency_ms[machine] < fastest[k].latency_ms[machine]:
            fastest[k] = e
    return sorted(fastest.values(), key=lambda e: (-e.metric, -e.latency_ms[machine], e.number))


def best(entries: Sequence[Scored], machine: str) -> Scored | None:
    r = ranked(entries, machine)
    return r[0] if r else None


def pareto(entries: Sequence[Scored], machine: str) -> list[Scored]:
    """Feasible entries not beaten on both metric and predicted latency on ``machine``."""
    front, top = [], -math.inf
    for e in sorted(feasible(entries, machine),
                    key=lambda e: (e.latency_ms[machine], -e.metric, e.number)):
        if e.metric > top:
            front.append(e)
            top = e.metric
    return front


def nearest(entries: Sequence[Scored], machine: str, chosen: str, k: int = 3
            ) -> list[tuple[Scored, bool]]:
    """The ``k`` feasible candidates nearest the chosen one (its key) in predicted latency,
    Pareto-optimal first; each with whether it is on the front."""
    front = {e.key for e in pareto(entries, machine)}
    pool = [e for e in feasible(entries, machine) if e.key != chosen]
    ref = next((e.latency_ms[machine] for e in entries if e.key == chosen),
               min((e.latency_ms[machine] for e in pool), default=0.0))
    pool.sort(key=lambda e: (e.key not in front, abs(e.latency_ms[machine] - ref), e.number))
    return [(e, e.key in front) for e in pool[:k]]


def with_metric(e: Scored, metric: float) -> Scored:
    return replace(e, metric=metric)


def describe(e: Scored, machine: str) -> str:
    return (f"trial {e.number}: {e.candidate.describe()}, predicted "
            f"{e.latency_ms[machine]:.2f} ms, proxy {e.metric:.4f}")


def keep_text(e: Scored) -> str:
    """The schedule as reports write it: keep fractions, or "t:" and thresholds."""
    return schedule_key(e.candidate.config)
