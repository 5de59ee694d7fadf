"""What one trial costs: a constraint check (predictor only), then the proxy metric if feasible.

A candidate that breaks the latency (or MACs) constraint costs a few predictor calls and is
never evaluated on data; its metric is reported to the sampler as a pessimistic constant
and the constraint violation goes to NSGA-II with ``trial.set_constraint`` (Optuna 5
deprecated ``constraints_func``; both end up in the same constrained domination). Feasible
candidates are evaluated once per distinct keep schedule: repeats reuse the metric of an
earlier trial (in this process or, through the storage, in another worker).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pruning import metrics
from pruning.config import PruningConfig, kept_counts
from pruning.data import Split
from pruning.encoder import PrunedBert
from pruning.evaluate import evaluate
from pruning.macs import dense_macs

from .space import SearchSpace, keep_key

ATTR = "tp"  # the one user attribute a trial carries (one storage write per trial)
PESSIMISTIC = -1.0  # the metric an infeasible (unevaluated) trial reports to the sampler


@dataclass(frozen=True)
class Check:
    """The cheap part of a trial: predicted latency per machine and MACs at the workload."""

    latency_ms: dict[str, float]
    macs_reduction: float  # dense MACs / pruned MACs for one input of seq_len real tokens
    feasible: dict[str, bool]  # per machine, both constraints
    constraints: tuple[float, float]  # optuna convention: <= 0 is satisfied

    @property
    def any_feasible(self) -> bool:
        return any(self.feasible.values())


class Checker:
    """Constraint check against one or several machines' latency predictors.

    A candidate is worth evaluating when it meets the target on at least one machine; each
    machine later chooses among the trials feasible on it.
    """

    def __init__(self, predictors: Mapping[str, Any], latency_ms: float, seq_len: int,
                 flops_reduction: float | None = None) -> None:
        self.predictors = dict(predictors)
        self.latency_ms, self.seq_len = float(latency_ms), int(seq_len)
        self.flops_reduction = flops_reduction
        first = next(iter(self.predictors.values()))
        self.dense_macs = dense_macs(self.seq_len, first.shape)

    def __call__(self, cfg: PruningConfig) -> Check:
        lat = {m: p.predict(cfg, self.seq_len) for m, p in self.predictors.items()}
        first = next(iter(self.predictors.values()))
        red = self.dense_macs / first.macs(cfg, self.seq_len)
        flops_gap = 0.0 if self.flops_reduction is None else self.flops_reduction - red
        feasible = {m: t <= self.latency_ms and flops_gap <= 0 for m, t in lat.items()}
        return Check(lat, red, feasible, (min(lat.values()) - self.latency_ms, flops_gap))


def fastest(space: SearchSpace, predictor: Any, seq_len: int) -> tuple[PruningConfig, float]:
    """The fastest schedule of the space on ``predictor`` and its predicted latency.

    Every pruning layer at the smallest ratio; which layers prune is chosen by dynamic
    programming over (layer, pruning layers so far), using the predictor's additive
    per-layer costs. Exact whenever a layer's cost grows with its token count.
    """
    K = [1.0]  # keep after j pruning layers, all at the smallest ratio
    while len(K) <= len(space.layers):
        K.append(max(space.floor, round(K[-1] * space.min_ratio, 4)))
    n = [kept_counts([k], seq_len)[0] for k in K]
    base = {m: predictor.raw_counts(m, [], []) for m in set(n)}

    def cost(n_in: int, n_out: int, prunes: bool) -> float:
        return predictor.raw_counts(n_in, [n_out], [prunes]) - base[n_in]

    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for l in range(space.shape.num_layers):
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for j, (c, chosen) in best.items():
            moves = [(j, cost(n[j], n[j], False), chosen)]
            if l in space.layers and j + 1 < len(K) and K[j + 1] < K[j]:
                moves.append((j + 1, cost(n[j], n[j + 1], True), chosen + (l,)))
            for j2, dc, ch in moves:
                if j2 not in nxt or c + dc < nxt[j2][0]:
                    nxt[j2] = (c + dc, ch)
        best = nxt
    _, layers = min(best.values())
    cfg = space.chain(layers)
    return cfg, predictor.predict(cfg, seq_len)


def expected_latency(predictor: Any, cfg: PruningConfig, lengths: Sequence[int]
                     ) -> float | None:
    """Mean predicted latency over inputs of the given real lengths (None: off the table)."""
    counts = Counter(int(n) for n in lengths)
    if not counts or max(counts) > predictor.max_len:
        return None
    total = sum(c * predictor.predict(cfg, n) for n, c in counts.items())
    return total / sum(counts.values())


class ProxyEvaluator:
    """The task metric of a configuration applied to the model as is (static top-k)."""

    def __init__(self, model: PrunedBert, split: Split, max_len: int, batch_size: int = 32,
                 device: str = "cpu") -> None:
        self.model, self.split, self.max_len = model, split, max_len
        self.batch_size, self.device = batch_size, device
        self.metric = metrics.primary(split.task.metric)
        self.calls = 0

    def __call__(self, cfg: PruningConfig) -> float:
        self.calls += 1
        r = evaluate(self.model, self.split, self.max_len, self.batch_size, pruning=cfg,
                     device=self.device)
        return float(r.score)


class Objective:
    """(proxy metric, predicted latency on the first machine) of one trial.

    Sets the trial's user attribute ``ATTR`` (keep, per-machine latency, feasibility, MACs,
    metric) and its constraint values. ``refresh`` is called before an evaluation, so a
    configuration another worker has just evaluated is read instead of evaluated again.
    """

    def __init__(self, space: SearchSpace, checker: Checker, evaluator: Any,
                 sampler_seed: int | None = None,
                 refresh: Callable[[], None] | None = None) -> None:
        self.space, self.checker, self.evaluator = space, checker, evaluator
        self.primary = next(iter(checker.predictors))
        self.sampler_seed, self.refresh = sampler_seed, refresh
        self.cache: dict[str, float] = {}  # keep key -> metric
        self.evaluations = self.cache_hits = self.skipped = 0

    def remember(self, attrs: Mapping[str, Any]) -> None:
        if attrs.get("metric") is not None:
            self.cache.setdefault(attrs["keep_key"], attrs["metric"])

    def __call__(self, trial: Any) -> tuple[float, float]:
        cfg = self.space.suggest(trial)
        c = self.checker(cfg)
        key = keep_key(cfg.keep)
        attrs: dict[str, Any] = {
            "keep": list(cfg.keep), "keep_key": key, "latency_ms": c.latency_ms,
            "macs_reduction": c.macs_reduction, "feasible": c.feasible,
            "constraints": list(c.constraints), "metric": None, "evaluated": "skipped",
            "sampler_seed": self.sampler_seed}
        lat = c.latency_ms[self.primary]
        # NSGA-II's constrained domination reads these (Optuna >= 5; <= 0 is satisfied).
        trial.set_constraint("latency", c.constraints[0])
        if self.checker.flops_reduction is not None:
            trial.set_constraint("macs", c.constraints[1])
        if not c.any_feasible:
            self.skipped += 1
            trial.set_user_attr(ATTR, attrs)
            return PESSIMISTIC, lat
        if key not in self.cache and self.refresh is not None:
            self.refresh()
        if key in self.cache:
            metric = self.cache[key]
            self.cache_hits += 1
            attrs["evaluated"] = "cache"
        else:
            metric = float(self.evaluator(cfg))
            self.evaluations += 1
            attrs["evaluated"] = "yes"
        attrs["metric"] = metric
        self.remember(attrs)
        trial.set_user_attr(ATTR, attrs)
        return metric, lat
