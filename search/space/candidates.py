"""The search space: runtime, input length, and the pruning policy's choices: ToP's
coarse-to-fine top-k schedules, or LTP's input-adaptive thresholds.

A point is a ``Candidate``: the backend it runs on (``backend``: torch, ort, ort-int8 —
asked only when there is more than one), the length inputs are truncated to (``max_len``,
asked only when there is more than one; 0 = no truncation beyond the workload's length),
and a top-k schedule. Coarse: which candidate layers prune at all (``prune_<l>``, a bool;
layer 0 never prunes). Fine: how much a pruning layer keeps of what entered it
(``ratio_<l>`` in [min_ratio, max_ratio], asked for only when ``prune_<l>`` is true: a
define-by-run, conditional space). ``keep[l] = max(floor, keep[l-1] * ratio_l)`` rounded to
4 decimals, and non-pruning layers repeat the previous value, so keep fractions are
non-increasing by construction and any parameter dict maps to a valid configuration.

Thresholds (``policy`` = threshold, asked only when both policies are searched) follow a
family that holds LTP's own, ``theta_l = theta * (l / L) ** slope`` for the layers from
``start`` on, 0 before (layer 0 never prunes): ``slope`` = 1 is LTP's linear ramp, ``slope``
= 0 one threshold for every pruning layer, ``start`` = 1 LTP's own (every layer prunes).
``theta`` is searched on a log scale relative to the workload's typical length (a token's
importance, the attention it receives, averages 1/N over the N tokens alive):
``theta = theta_rel / ref_length``. Why the slope: the top-k winners on the main job drop
70% of the tokens at layer 1 and little after, and LTP's ramp gives layer 1 a sixth of the
last layer's threshold, so no theta in range pruned layer 1 that hard (a 100-trial LTP
search found nothing within 20 ms, results/<machine>/adaptive-ltp-dev-20ms). A constant
threshold prunes hardest where the most tokens compete and less as the survivors'
importance grows (it averages 1/N_alive), which is that shape. Two numbers (and a start
layer), not a free value per layer, because each threshold trial costs a forward pass
over the latency inputs (its kept counts depend on the input): NSGA-II samples a small family
densely in a hundred trials where a 5-D space stays nearly empty; LTP's soft stage then learns the per-layer
values from this start. Why ``start`` (ToP's coarse choice, for thresholds): a layer with a
threshold computes its attention probabilities explicitly to score tokens, the fused
attention of a plain layer does not; on the Intel AMX host the tables predict ORT int8 at
128 tokens 20% slower with every layer scoring and keeping all (12.09 against 10.03 ms) and,
at 32 tokens, no faster than dense even keeping only CLS (3.01 against 3.00 ms). A layer
whose threshold is 0 runs as a plain layer, so a late start pays the scoring only where it
prunes; LTP's training keeps those layers at 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from optuna.distributions import CategoricalDistribution, FloatDistribution

from tp_search.pruning.config import ModelShape, PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.runtime.registry import REFERENCE

DECIMALS = 4  # keep fractions are rounded: readable outputs, stable cache keys


BACKEND, MAX_LEN, POLICY, THETA, SLOPE, START = ("backend", "max_len", "policy", "theta",
                                                 "slope", "start")
POLICIES = ("topk", "threshold")
THETA_RANGE = (0.05, 8.0)  # theta_rel: theta times the workload's typical length
SLOPE_RANGE = (0.0, 1.0)  # 0: one threshold for all layers; 1: LTP's linear ramp
MAX_THRESHOLD = 0.999  # a token's importance is at most 1: thresholds stay below it


@dataclass(frozen=True)
class Candidate:
    """One point of the space: where it runs, how long its inputs may be, what it keeps."""

    backend: str
    max_len: int  # truncation (tokens); 0 = none beyond the workload's length
    config: PruningConfig

    @property
    def keep(self) -> tuple[float, ...]:
        return self.config.keep or (1.0,) * self.config.shape.num_layers

    @property
    def key(self) -> str:
        """Identifies the candidate (trials, reports)."""
        return f"{self.backend}|{self.max_len}|{schedule_key(self.config)}"

    @property
    def adaptive(self) -> bool:
        """A threshold candidate: how many tokens it keeps depends on the input."""
        return self.config.policy == "threshold"

    def describe(self) -> str:
        trunc = f", truncated to {self.max_len} tokens" if self.max_len else ""
        if self.adaptive:
            return f"{self.backend}{trunc}, thresholds {schedule_key(self.config)[2:]}"
        return f"{self.backend}{trunc}, keep {keep_key(self.keep)}"


def prune_param(layer: int) -> str:
    return f"prune_{layer}"


def ratio_param(layer: int) -> str:
    return f"ratio_{layer}"


@dataclass(frozen=True)
class SearchSpace:
    shape: ModelShape
    layers: tuple[int, ...] = ()  # candidate pruning layers; () = every layer but the first
    min_ratio: float = 0.2
    max_ratio: float = 0.95
    floor: float = 0.02  # smallest keep fraction (CLS always survives anyway)
    backends: tuple[str, ...] = (REFERENCE,)  # runtimes to choose from
    lengths: tuple[int, ...] = (0,)  # truncation lengths to choose from (0: none)
    policies: tuple[str, ...] = ("topk",)  # topk (ToP), threshold (LTP) or both
    ref_length: float = 128.0  # the workload's typical length: thresholds scale with 1/N

    def __post_init__(self) -> None:
        L = self.shape.num_layers
        layers = tuple(sorted(set(self.layers))) if self.layers else tuple(range(1, L))
        object.__setattr__(self, "layers", layers)
        bad = [l for l in layers if not 1 <= l < L]
        if bad:
            raise TpError(f"candidate layer {bad[0]} is out of range: layers 1..{L - 1} can "
                          "prune (layer 0 never prunes)")
        if not layers:
            raise TpError(f"a {L}-layer model has no layer that may prune (layer 0 never "
                          "prunes); token pruning needs at least 2 layers")
        if not 0 < self.min_ratio <= self.max_ratio < 1:
            raise TpError(f"ratio range [{self.min_ratio}, {self.max_ratio}] must satisfy "
                          "0 < min <= max < 1")
        if not 0 < self.floor < 1:
            raise TpError(f"keep floor {self.floor} must be in (0, 1)")
        if not self.backends or len(set(self.backends)) != len(self.backends):
            raise TpError(f"backends {self.backends}: name each at least and at most once")
        lengths = tuple(sorted(set(self.lengths), key=lambda n: (n != 0, -n)))
        if not lengths or min(lengths) < 0:
            raise TpError(f"truncation lengths {self.lengths} must be positive (0: none)")
        object.__setattr__(self, "lengths", lengths)
        bad = [p for p in self.policies if p not in POLICIES]
        if bad or not self.policies:
            raise TpError(f"pruning policies {self.policies}: use {', '.join(POLICIES)}")

    # ---- parameters -> configuration ---------------------------------------------------
    def keep(self, params: Mapping[str, Any]) -> tuple[float, ...]:
        out, prev = [], 1.0
        for l in range(self.shape.num_layers):
            if l in self.layers and params.get(prune_param(l)):
                r = float(params[ratio_param(l)])
                if not self.min_ratio - 1e-9 <= r <= self.max_ratio + 1e-9:
                    raise TpError(f"{ratio_param(l)}={r} is outside the search range "
                                  f"[{self.min_ratio}, {self.max_ratio}]")
                prev = max(self.floor, round(prev * r, DECIMALS))
            out.append(prev)
        return tuple(out)

    def to_config(self, params: Mapping[str, Any], **meta: Any) -> PruningConfig:
        return PruningConfig.topk(self.shape, self.keep(params), method="search", **meta)

    def thresholds(self, theta_rel: float, slope: float = 1.0, start: int = 1
                   ) -> tuple[float, ...]:
        """theta_l = theta * (l / L) ** slope from layer ``start`` on, theta = theta_rel /
        ref_length; 0 before (layer 0 always)."""
        L = self.shape.num_layers
        if not 1 <= int(start) < L:
            raise TpError(f"threshold start layer {start} is out of range 1..{L - 1}")
        theta = float(theta_rel) / self.ref_length
        return (0.0,) + tuple(round(min(theta * (l / L) ** float(slope), MAX_THRESHOLD), 8)
                              if l >= int(start) else 0.0 for l in range(1, L))

    def threshold_config(self, theta_rel: float, slope: float = 1.0, start: int = 1
                         ) -> PruningConfig:
        """The family's member at (theta_rel, slope, start)."""
        return PruningConfig.threshold(self.shape, self.thresholds(theta_rel, slope, start),
                                       method="search")

    def aggressive(self, start: int = 1) -> PruningConfig:
        """The most aggressive member pruning from ``start``: every threshold at its
        highest, so it keeps the fewest tokens of any member with that start."""
        return self.threshold_config(THETA_RANGE[1], SLOPE_RANGE[0], start)

    @property
    def starts(self) -> tuple[int, ...]:
        """Where a threshold family member may start pruning: the candidate layers."""
        return self.layers

    def to_candidate(self, params: Mapping[str, Any]) -> Candidate:
        backend = params.get(BACKEND, self.backends[0])
        max_len = int(params.get(MAX_LEN, self.lengths[0]))
        policy = params.get(POLICY, self.policies[0])
        if backend not in self.backends or max_len not in self.lengths \
                or policy not in self.policies:
            raise TpError(f"backend {backend!r} / max_len {max_len} / policy {policy!r} is "
                          f"outside the search space ({self.describe()})")
        if policy == "threshold":
            start = int(params.get(START, self.starts[0]))  # recorded before start existed: 1
            cfg = self.threshold_config(params[THETA], params.get(SLOPE, 1.0), start)
            return Candidate(backend, max_len, cfg)
        return Candidate(backend, max_len, self.to_config(params))

    def suggest(self, trial: Any) -> Candidate:
        """Ask ``trial`` (an optuna Trial) for a point of the space, define-by-run."""
        params: dict[str, Any] = {}
        if len(self.backends) > 1:
            params[BACKEND] = trial.suggest_categorical(BACKEND, self.backends)
        if len(self.lengths) > 1:
            params[MAX_LEN] = trial.suggest_categorical(MAX_LEN, self.lengths)
        if len(self.policies) > 1:
            params[POLICY] = trial.suggest_categorical(POLICY, self.policies)
        if params.get(POLICY, self.policies[0]) == "threshold":
            params[THETA] = trial.suggest_float(THETA, *THETA_RANGE, log=True)
            params[SLOPE] = trial.suggest_float(SLOPE, *SLOPE_RANGE)
            if len(self.starts) > 1:
                params[START] = trial.suggest_categorical(START, self.starts)
            return self.to_candidate(params)
        for l in self.layers:
            prune = trial.suggest_categorical(prune_param(l), (False, True))
            params[prune_param(l)] = prune
            if prune:
                params[ratio_param(l)] = trial.suggest_float(ratio_param(l), self.min_ratio,
                                                             self.max_ratio)
        return self.to_candidate(params)

    def distributions(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna distributions of the given parameters (to rebuild recorded trials)."""
        out: dict[str, Any] = {}
        for name in params:
            if name == BACKEND:
                out[name] = CategoricalDistribution(self.backends)
            elif name == MAX_LEN:
                out[name] = CategoricalDistribution(self.lengths)
            elif name == POLICY:
                out[name] = CategoricalDistribution(self.policies)
            elif name == THETA:
                out[name] = FloatDistribution(*THETA_RANGE, log=True)
            elif name == SLOPE:
                out[name] = FloatDistribution(*SLOPE_RANGE)
            elif name == START:
                out[name] = CategoricalDistribution(self.starts)
            elif name.startswith("prune_"):
                out[name] = CategoricalDistribution((False, True))
            elif name.startswith("ratio_"):
                out[name] = FloatDistribution(self.min_ratio, self.max_ratio)
            else:
                raise TpError(f"parameter {name!r} is not part of the search space")
        return out

    # ---- configuration -> parameters ---------------------------------------------------
    def candidate_params(self, c: Candidate) -> dict[str, Any]:
        """The parameters that reproduce candidate ``c`` (for ``study.enqueue_trial``)."""
        params: dict[str, Any] = {}
        if len(self.backends) > 1:
            params[BACKEND] = c.backend
        if len(self.lengths) > 1:
            params[MAX_LEN] = c.max_len
        if len(self.policies) > 1:
            params[POLICY] = "threshold" if c.adaptive else "topk"
        if c.adaptive:
            theta, slope, start = self.theta_of(c.config)
            out = {**params, THETA: theta, SLOPE: slope}
            return {**out, START: start} if len(self.starts) > 1 else out
        return {**params, **self.to_params(c.config)}

    def theta_of(self, cfg: PruningConfig) -> tuple[float, float, int]:
        """(theta_rel, slope, start) of a threshold configuration of the family, clamped to
        the ranges: start is its first non-zero layer (the first candidate layer when none
        is), slope and theta from that layer's and the last layer's thresholds (their ratio
        is ((L - 1) / start) ** slope)."""
        L = self.shape.num_layers
        start = next((l for l in range(1, L) if cfg.thresholds[l] > 0), self.starts[0])
        if start not in self.starts:
            start = min(self.starts, key=lambda s: abs(s - start))
        first, last = cfg.thresholds[start], cfg.thresholds[-1]
        slope = 1.0
        if start < L - 1 and first > 0 and last > 0:
            slope = math.log(last / first) / math.log((L - 1) / start)
        slope = min(max(slope, SLOPE_RANGE[0]), SLOPE_RANGE[1])
        theta = last / ((L - 1) / L) ** slope * self.ref_length
        return min(max(theta, THETA_RANGE[0]), THETA_RANGE[1]), slope, start

    def to_params(self, cfg: PruningConfig) -> dict[str, Any]:
        """The pruning parameters that reproduce ``cfg``.

        ``to_config(to_params(cfg)).keep == cfg.keep`` for every configuration of the space
        (any 4-decimal keep schedule whose drops happen at candidate layers, each by a ratio
        in range or down to the floor).
        """
        cfg.check_shape(self.shape)
        if cfg.policy == "none":
            return {prune_param(l): False for l in self.layers}
        if cfg.policy != "topk":
            raise TpError(f"a {cfg.policy} configuration is not in the top-k search space")
        params: dict[str, Any] = {}
        prev = 1.0
        for l, k in enumerate(cfg.keep):
            drops = k < prev - 1e-12
            if l not in self.layers:
                if drops:
                    raise TpError(f"configuration prunes at layer {l}, which is not a "
                                  f"candidate layer ({', '.join(map(str, self.layers))})")
                continue
            params[prune_param(l)] = drops
            if drops:
                r = k / prev
                if k <= self.floor + 1e-12 and r < self.min_ratio:
                    r = self.min_ratio  # clamped to the floor: the smallest ratio gets there
                if not self.min_ratio - 1e-9 <= r <= self.max_ratio + 1e-9:
                    raise TpError(f"layer {l} keeps {r:.4f} of its input, outside the search "
                                  f"range [{self.min_ratio}, {self.max_ratio}]")
                params[ratio_param(l)] = min(max(r, self.min_ratio), self.max_ratio)
            prev = k
        return params

    # ---- extremes ----------------------------------------------------------------------
    def chain(self, layers: tuple[int, ...] | None = None) -> PruningConfig:
        """The most aggressive schedule pruning exactly at ``layers`` (default: all)."""
        chosen = self.layers if layers is None else layers
        params: dict[str, Any] = {prune_param(l): l in chosen for l in self.layers}
        params.update({ratio_param(l): self.min_ratio for l in chosen})
        return self.to_config(params)

    def candidates(self, cfg: PruningConfig) -> list[Candidate]:
        """``cfg`` on every backend at every length: the single-lever reference points."""
        return [Candidate(b, n, cfg) for b in self.backends for n in self.lengths]

    def describe(self) -> str:
        trunc = ", ".join(str(n) if n else "none" for n in self.lengths)
        parts = []
        if "topk" in self.policies:
            parts.append(f"top-k: layers {','.join(map(str, self.layers))} may prune, ratio "
                         f"[{self.min_ratio}, {self.max_ratio}] per pruning layer, keep floor "
                         f"{self.floor}")
        if "threshold" in self.policies:
            parts.append(f"thresholds theta_l = theta * (l / L) ** slope from layer start "
                         f"on, theta in [{THETA_RANGE[0]:g}, {THETA_RANGE[1]:g}] / "
                         f"{self.ref_length:.0f} tokens (log scale), slope in "
                         f"[{SLOPE_RANGE[0]:g}, {SLOPE_RANGE[1]:g}], start in "
                         f"{','.join(map(str, self.starts))}")
        return (f"backends {', '.join(self.backends)}; truncation {trunc}; "
                + "; ".join(parts))

    def to_dict(self) -> dict[str, Any]:
        return {"backends": list(self.backends), "lengths": list(self.lengths),
                "policies": list(self.policies), "ref_length": self.ref_length,
                "layers": list(self.layers), "min_ratio": self.min_ratio,
                "max_ratio": self.max_ratio, "floor": self.floor,
                # a threshold search's study is named by its family: studies of the family
                # without a start layer are never resumed as if they had explored it
                **({"threshold_family": "theta*(l/L)**slope from start"}
                   if "threshold" in self.policies else {}),
                "parametrisation": "backend and max_len categorical (when more than one); "
                                   "prune_<l> bool; ratio_<l> only when prune_<l>; "
                                   "keep[l] = max(floor, round(keep[l-1] * ratio_l, 4))"}


def schedule_key(cfg: PruningConfig) -> str:
    """What a configuration keeps, as text: its keep fractions, or "t:" and thresholds."""
    if cfg.policy == "threshold":
        return "t:" + ",".join(f"{t:.6g}" for t in cfg.thresholds)
    return keep_key(cfg.keep or (1.0,) * cfg.shape.num_layers)


def keep_key(keep: tuple[float, ...] | list[float]) -> str:
    """A stable text key of a keep schedule (cache key, CSV cell)."""
    return ",".join(f"{k:.{DECIMALS}f}".rstrip("0").rstrip(".") for k in keep)
