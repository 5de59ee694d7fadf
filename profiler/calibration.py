"""Calibrating a table: the sum of its parts against real full passes on the same backend.

Full passes (the dense model and random pruned schedules, at lengths an octave apart) are
timed interleaved round after round with the grid's reference pass, for a window long
enough to span the machine's own speed changes (``calibration_window_s``: seconds, not the
1-2 s the first versions used: on the Intel Xeon where predictions were 15-33% high, the
whole calibration ran in 1.2 s, inside one state of the VM). Each pass is expressed in
reference units (divided by the reference of its round) and brought back to ms at the
window's own median reference: drift *within* the window cancels, and the level is that of
full passes run back to back, as a deployed model runs.

The level is not the grid's reference. The reference (a short plain pass) is not a pure
gauge of the machine's state: its speed depends on the work timed beside it. On
intel-xeon-f6m167-2c-amx-6d3967 the grid's per-point "state" rose with the point's length
(ov-int8 0.79 at 32 tokens to 1.72 at 512, torch 0.92 to 1.28; flat within noise on the AMD
hosts), and the reference beside full passes ran 1.14-1.51x its grid median: rescaling to
the grid's level under-predicted every full pass by that factor (validation -16% torch,
-34% ort-int8, -37% ov-int8; +3% for ov, whose ratio was 0.98).

The fit minimises *relative* error (``measured = scale * parts + offset``, each point
weighted by 1/measured^2: a 10-token pass counts as much as a 512-token one). When no
affine fit holds every point within ``AFFINE_TOLERANCE`` (or its scale is implausible), the
calibration is a per-length ratio instead (measured / parts at each calibration length,
interpolated in log length) and says so: the old code fell back silently to one median
ratio over mostly short lengths, which on the Intel Xeon fitted scale 1.335 at 8-128
tokens with a 55% residual nobody read, then over-predicted every 128-token schedule.

The same window gives the backend's *tail*: percentiles of the dense full pass over its
median, what a percentile target must plan for.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

from tp_search.profiler.build_settings import BuildSettings
from tp_search.profiler.calibration_fit import fit, tail
from tp_search.profiler.grid import reference_length, time_reference
from tp_search.profiler.predictor import Predictor
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.macs import reduction
from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.measure.timing import time_interleaved
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.runtime import get_backend



def random_schedule(shape, n: int, rng: random.Random, lo: float = 1.2, hi: float = 8.0
                    ) -> PruningConfig:
    """A random topk configuration with a MACs reduction in [lo, hi] at length n: varied
    first pruning layer, varied per-layer ratios (rejection sampling)."""
    L = shape.num_layers
    for _ in range(10000):
        first = rng.randint(1, max(1, L - 1))
        keep, k = [], 1.0
        for l in range(L):
            if l >= first and rng.random() < 0.7:
                k *= rng.uniform(0.25, 0.95)
            keep.append(max(k, 1.0 / n))
        cfg = PruningConfig.topk(shape, keep, method="random")
        r = reduction(cfg, n)
        if lo <= r <= hi:
            return cfg
    raise RuntimeError(f"no random schedule with MACs reduction in [{lo}, {hi}] at n={n}")


def calibration_lengths(pred: Predictor, max_len: int, budget_s: float, rounds: int = 6,
                        count: int = 5) -> list[int]:
    """Up to ``count`` lengths an octave apart, ending as close to max_len as the budget
    allows: the fit must hold from a few dozen tokens (where heavily pruned layers run) to
    long inputs, but full passes at 512 tokens of bert-base would cost as much as the whole
    grid. Cost per round ~ dense + one cheaper pruned pass per length."""
    dense = PruningConfig.dense(pred.shape)
    L = pred.shape.num_layers

    def cost(n: int) -> float:
        return 1.5 * pred.raw_counts(n, dense.kept_counts(n), [False] * L) / 1e3 * rounds

    def lengths(top: int) -> list[int]:
        return sorted({max(8, top >> k) for k in range(count)})

    top = max_len
    while top > 32 and sum(cost(n) for n in lengths(top)) > budget_s:
        top //= 2
    return lengths(top)


def calibrate(model: PrunedBert, pred: Predictor, s: BuildSettings, batch: int,
              grid_s: float = 0.0, reference_ms: float | None = None) -> dict[str, Any]:
    """Fit the table's parts to full passes timed interleaved with the reference pass over
    at least ``s.calibration_window_s``, at the window's own level; ``reference_ms``: the
    grid's reference, recorded beside it (see the module doc for why it is not the level)."""
    rng = random.Random(s.seed + 17)
    lens = calibration_lengths(pred, min(s.max_len, pred.max_len),
                               max(s.calibration_budget_s, grid_s / 4))
    backend = get_backend(s.backend)
    run = backend.full_pass(model, pred.threads)
    ref = backend.component_timers(model, pred.threads)(batch, reference_length([pred.max_len]))
    ref.warm()
    xs, ps, ns, fns = [], [], [], {}
    # an exported backend compiles one graph per configuration: the same few schedules
    # serve every length there; the encoder itself draws fresh ones per length
    shared = [random_schedule(model.shape, lens[-1], rng) for _ in range(2)]
    for n in lens:
        ids = fixed_inputs(model, None, n, batch, seed=n)["input_ids"].to(s.device)
        cfgs = [PruningConfig.dense(model.shape)] + (shared if backend.exported else [
            random_schedule(model.shape, n, rng)
            for _ in range(max(1, s.calibration_configs // len(lens)))])
        for cfg in cfgs:
            L = model.shape.num_layers
            raw, pruned = pred.raw_parts(n, cfg.kept_counts(n),
                                         [cfg.prunes_at(l) for l in range(L)])
            xs.append(raw)
            ps.append(pruned)
            ns.append(n)
            fns[str(len(fns))] = run(cfg, ids)
    fns["ref"] = lambda: time_reference(ref)
    ms = time_interleaved(fns, repeats=5, warmup=1, device=s.device,
                          min_time_s=s.calibration_window_s)
    unit = ms["ref"]  # the reference of each round
    level = float(np.median(unit))
    ys = [float(np.median(ms[str(i)] / unit)) * level for i in range(len(xs))]
    x, y, n = np.array(xs), np.array(ys), np.array(ns)
    cal = fit(x, y, n, np.array(ps))
    dense_long = str(len(xs) - len(cfgs))  # the dense pass at the longest length
    return cal | {
        "points": len(x), "lengths": lens, "raw_bias": float(np.median((x - y) / y)),
        "rounds": int(len(unit)), "window_s": round(float(sum(v.sum() for v in ms.values()))
                                                    / 1e3, 1),
        "tail": tail(ms[dense_long]), "tail_length": lens[-1],
        "reference": {"tokens": reference_length([pred.max_len]), "ms": level,
                      "window_ms": level, "grid_ms": reference_ms, "level": "window"}}
