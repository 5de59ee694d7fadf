"""What one trial costs: a constraint check (predictor only), then the proxy metric if feasible.

A candidate that breaks the latency (or MACs) constraint costs a few predictor calls and is
never evaluated on data; its metric is reported to the sampler as a pessimistic constant
and the constraint violation goes to NSGA-II with ``trial.set_constraint`` (Optuna 5
deprecated ``constraints_func``; both end up in the same constrained domination). Feasible
candidates are evaluated once per distinct (numerics, truncation, keep schedule): the fp32
backends share numerics (``registry.numerics``), so they share metrics, and repeats reuse the
metric of an earlier trial (in this process or, through the storage, in another worker).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from tp_search.pruning.config import PruningConfig, kept_counts
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.macs import counts_reduction, reduction
from tp_search.pruning.runtime.registry import numerics

from tp_search.search.space.candidates import Candidate, SearchSpace, keep_key, schedule_key
from tp_search.search.space.workload import Request, Workload

ATTR = "tp"  # the one user attribute a trial carries (one storage write per trial)
PESSIMISTIC = -1.0  # the metric an infeasible (unevaluated) trial reports to the sampler

# predictors[machine][backend]: a profiler.Predictor for that machine's table on that backend
Predictors = Mapping[str, Mapping[str, Any]]


def metric_key(c: Candidate) -> str:
    """What decides a candidate's metric: its numerics, its input length, its schedule."""
    return f"{numerics(c.backend)}|{c.max_len}|{schedule_key(c.config)}"


@dataclass(frozen=True)
class Check:
    """The cheap part of a trial: predicted latency per machine and MACs at the workload."""

    latency_ms: dict[str, float]  # per machine, on the candidate's backend
    macs_reduction: float  # dense MACs at full length / the candidate's, at the workload
    feasible: dict[str, bool]  # per machine, both constraints
    constraints: tuple[float, float]  # optuna convention: <= 0 is satisfied

    @property
    def any_feasible(self) -> bool:
        return any(self.feasible.values())


class Checker:
    """Constraint check against one or several machines' latency predictors.

    A candidate is feasible on a machine when its latency predicted at the workload is
    within that machine's limit for the candidate's backend (``limits[machine][backend]``,
    ``planning.Plan.limit_ms``: the target over the backend's tail; default the target
    itself). It is worth evaluating when feasible on at least one machine; each machine
    later chooses among the trials feasible on it. A machine without a table for the
    candidate's backend cannot run it (infinite latency there).
    """

    def __init__(self, predictors: Predictors, latency_ms: float, workload: Workload,
                 min_macs_reduction: float | None = None,
                 limits: Mapping[str, Mapping[str, float]] | None = None,
                 counts: Callable[[Candidate], list[Request]] | None = None) -> None:
        self.predictors = {m: dict(p) for m, p in predictors.items()}
        self.latency_ms, self.workload = float(latency_ms), workload
        self.min_macs_reduction = min_macs_reduction
        self.counts = counts  # per-request kept counts of threshold candidates
        self.limits = {m: {b: float((limits or {}).get(m, {}).get(b, latency_ms)) for b in p}
                       for m, p in self.predictors.items()}
        any_predictor = next(iter(next(iter(self.predictors.values())).values()))
        self.shape = any_predictor.shape

    def latency(self, machine: str, c: Candidate) -> float:
        p = self.predictors[machine].get(c.backend)
        if p is None:
            return float("inf")
        if c.adaptive:  # input-dependent counts: the percentile of per-request predictions
            return self.workload.predict_requests(p, c.config, self._counts(c))
        return self.workload.predict(p, c.config, c.max_len)

    def _counts(self, c: Candidate) -> list[Request]:
        if self.counts is None:
            raise TpError("threshold candidates need their kept counts: the search builds "
                          "the Checker with counts=KeptCounts(...)")
        return self.counts(c)

    def limit(self, machine: str, backend: str) -> float:
        return self.limits[machine].get(backend, float("-inf"))

    def macs_reduction(self, c: Candidate) -> float:
        if c.adaptive:
            reqs = self._counts(c)
            base = getattr(self.counts, "dense_lengths", None)
            return counts_reduction(c.config.shape, reqs, base(c) if base else None)
        return reduction(c.config, self.workload.length(), c.max_len)

    def __call__(self, c: Candidate) -> Check:
        lat = {m: self.latency(m, c) for m in self.predictors}
        red = self.macs_reduction(c)
        macs_gap = (0.0 if self.min_macs_reduction is None
                    else self.min_macs_reduction - red)
        over = {m: t - self.limit(m, c.backend) for m, t in lat.items()}
        feasible = {m: o <= 0 and macs_gap <= 0 for m, o in over.items()}
        return Check(lat, red, feasible, (min(over.values()), macs_gap))


def fastest_schedule(space: SearchSpace, predictor: Any, n: int) -> PruningConfig:
    """The fastest keep schedule of the space for inputs of ``n`` tokens on ``predictor``.

    Every pruning layer at the smallest ratio; which layers prune is chosen by dynamic
    programming over (layer, pruning layers so far), using the predictor's additive
    per-layer costs. Exact whenever a layer's cost grows with its token count.
    """
    K = [1.0]  # keep after j pruning layers, all at the smallest ratio
    while len(K) <= len(space.layers):
        K.append(max(space.floor, round(K[-1] * space.min_ratio, 4)))
    counts = [kept_counts([k], n)[0] for k in K]
    base = {m: predictor.raw_counts(m, [], []) for m in set(counts)}

    def cost(n_in: int, n_out: int, prunes: bool) -> float:
        return predictor.raw_counts(n_in, [n_out], [prunes]) - base[n_in]

    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for l in range(space.shape.num_layers):
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for j, (c, chosen) in best.items():
            moves = [(j, cost(counts[j], counts[j], False), chosen)]
            if l in space.layers and j + 1 < len(K) and K[j + 1] < K[j]:
                moves.append((j + 1, cost(counts[j], counts[j + 1], True), chosen + (l,)))
            for j2, dc, ch in moves:
                if j2 not in nxt or c + dc < nxt[j2][0]:
                    nxt[j2] = (c + dc, ch)
        best = nxt
    _, layers = min(best.values())
    return space.chain(layers)


def fastest(space: SearchSpace, predictors: Mapping[str, Any], workload: Workload
            ) -> tuple[Candidate, float]:
    """The fastest candidate of the space on one machine (``predictors`` by backend) and
    its predicted latency at the workload: the shortest truncation, the fastest schedule,
    on whichever backend is fastest."""
    best: tuple[Candidate, float] | None = None
    shortest = min(space.lengths, key=lambda n: n or workload.seq_len)
    for b in space.backends:
        p = predictors.get(b)
        if p is None:
            continue
        cfg = fastest_schedule(space, p, workload.length(shortest))
        c = Candidate(b, shortest, cfg)
        ms = workload.predict(p, cfg, shortest)
        if best is None or ms < best[1]:
            best = (c, ms)
    if best is None:
        raise ValueError("no predictor for any backend of the space")
    return best


def expected_latency(predictor: Any, cfg: PruningConfig, lengths: Sequence[int],
                     max_len: int = 0) -> float | None:
    """Mean predicted latency over inputs of the given real lengths, each truncated to
    ``max_len`` (0: not); None when a length is off the table."""
    counts = Counter(min(int(n), max_len) if max_len else int(n) for n in lengths)
    if not counts or max(counts) > predictor.max_len:
        return None
    total = sum(c * predictor.predict(cfg, n) for n, c in counts.items())
    return total / sum(counts.values())


class Objective:
    """(proxy metric, predicted latency on the first machine) of one trial.

    Sets the trial's user attribute ``ATTR`` (candidate, per-machine latency, feasibility,
    MACs, metric) and its constraint values. ``refresh`` is called before an evaluation, so
    a candidate another worker has just evaluated is read instead of evaluated again.
    """

    def __init__(self, space: SearchSpace, checker: Checker, evaluator: Any,
                 sampler_seed: int | None = None,
                 refresh: Callable[[], None] | None = None) -> None:
        self.space, self.checker, self.evaluator = space, checker, evaluator
        self.primary = next(iter(checker.predictors))
        self.sampler_seed, self.refresh = sampler_seed, refresh
        self.cache: dict[str, float] = {}  # metric key -> metric
        self.evaluations = self.cache_hits = self.skipped = 0

    def remember(self, attrs: Mapping[str, Any]) -> None:
        if attrs.get("metric") is not None:
            key = attrs.get("metric_key") or f"fp32|0|{attrs['keep_key']}"
            self.cache.setdefault(key, attrs["metric"])

    def metric(self, c: Candidate) -> tuple[float, str]:
        """The candidate's metric and where it came from ("cache" or "yes": evaluated)."""
        key = metric_key(c)
        if key not in self.cache and self.refresh is not None:
            self.refresh()
        if key in self.cache:
            self.cache_hits += 1
            return self.cache[key], "cache"
        value = float(self.evaluator(c))
        self.evaluations += 1
        self.cache[key] = value
        return value, "yes"

    def __call__(self, trial: Any) -> tuple[float, float]:
        cand = self.space.suggest(trial)
        c = self.checker(cand)
        attrs: dict[str, Any] = {
            "backend": cand.backend, "max_len": cand.max_len, "keep": list(cand.keep),
            "keep_key": keep_key(cand.keep), "key": cand.key, "metric_key": metric_key(cand),
            "policy": cand.config.policy, "thresholds": list(cand.config.thresholds or ()),
            "latency_ms": c.latency_ms, "macs_reduction": c.macs_reduction,
            "feasible": c.feasible, "constraints": list(c.constraints), "metric": None,
            "evaluated": "skipped", "sampler_seed": self.sampler_seed}
        if cand.adaptive and self.checker.counts is not None:  # a rerun reads them back
            attrs["requests"] = [[n, list(k)] for n, k in self.checker.counts(cand)]
        lat = c.latency_ms[self.primary]
        # NSGA-II's constrained domination reads these (Optuna >= 5; <= 0 is satisfied).
        trial.set_constraint("latency", c.constraints[0])
        if self.checker.min_macs_reduction is not None:
            trial.set_constraint("macs", c.constraints[1])
        if not c.any_feasible:
            self.skipped += 1
            trial.set_user_attr(ATTR, attrs)
            return PESSIMISTIC, min(lat, 1e9)
        attrs["metric"], attrs["evaluated"] = self.metric(cand)
        trial.set_user_attr(ATTR, attrs)
        return attrs["metric"], min(lat, 1e9)
