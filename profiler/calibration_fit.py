"""The calibration's arithmetic, apart from any timing: the fit of the table's parts to full
passes (relative least squares, or per length when no affine fit holds), its evaluation at
any length, and a backend's tail from repeated passes."""
from __future__ import annotations

from typing import Any

import numpy as np

AFFINE_TOLERANCE = 0.10  # the largest relative residual an affine calibration may leave
SCALE_RANGE = (0.7, 1.4)  # a plausible affine scale (parts vs full passes)
TAIL_PERCENTILES = (50, 75, 90, 95, 99)


def fit(x: np.ndarray, y: np.ndarray, n: np.ndarray, pruned: np.ndarray | None = None
        ) -> dict[str, Any]:
    """The calibration of parts ``x`` against full passes ``y`` at input lengths ``n``;
    ``pruned``: the part of ``x`` spent in pruning layers (their scoring attention,
    selection and what follows at the kept count)."""
    A = np.stack([x / y, 1.0 / y], 1)
    scale, offset = np.linalg.lstsq(A, np.ones_like(y), rcond=None)[0]
    resid = (scale * x + offset) / y - 1.0
    affine_err = float(np.abs(resid).max())
    out: dict[str, Any] = {"affine_max_abs_error": affine_err}
    if SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] and affine_err <= AFFINE_TOLERANCE:
        return out | {"model": "affine", "scale": float(scale), "offset_ms": float(offset),
                      "fit_max_abs_error": affine_err}
    ratios = length_ratios(x, y, n, np.ones_like(n, dtype=bool))
    pred = np.array([per_length_scale(ratios, int(k)) for k in n]) * x
    per_length = out | {"model": "per-length", "scale": 1.0, "offset_ms": 0.0,
                        "ratios": {str(k): v for k, v in ratios.items()},
                        "fit_max_abs_error": float(np.abs(pred / y - 1.0).max())}
    kind = per_kind(x, y, n, pruned) if pruned is not None else None
    if kind is not None and kind["fit_max_abs_error"] < per_length["fit_max_abs_error"]:
        return out | kind | {"per_length_max_abs_error": per_length["fit_max_abs_error"]}
    return per_length


def per_kind(x: np.ndarray, y: np.ndarray, n: np.ndarray, pruned: np.ndarray
             ) -> dict[str, Any] | None:
    """Per-length ratios from the dense passes, applied to the layers that do not prune,
    and one ratio for the pruning layers' parts, fitted on the pruned passes.

    Why: an exported backend times each kind of layer as its own small graph, and a
    compiler that optimises a graph as a whole treats a small graph differently (NNCF
    quantizes 19 of the 36 MatMuls of the pruning-layer component graph, all 38 in the
    whole model): the dense passes cannot see the pruning layers' error, and one ratio per
    length spreads it over every schedule alike. None without dense and pruned passes."""
    dense = pruned <= 1e-12
    if not dense.any() or dense.all():
        return None
    ratios = length_ratios(x, y, n, dense)
    r = np.array([per_length_scale(ratios, int(k)) for k in n])
    rest = x - pruned
    p = ~dense
    prune_ratio = float(np.median((y[p] - r[p] * rest[p]) / pruned[p]))
    if not 0.3 <= prune_ratio <= 3.0:
        return None
    pred = r * rest + prune_ratio * pruned
    return {"model": "per-kind", "scale": 1.0, "offset_ms": 0.0,
            "ratios": {str(k): v for k, v in ratios.items()}, "prune_ratio": prune_ratio,
            "fit_max_abs_error": float(np.abs(pred / y - 1.0).max())}


def length_ratios(x: np.ndarray, y: np.ndarray, n: np.ndarray, rows: np.ndarray
                  ) -> dict[int, float]:
    """Median measured / parts at each input length, over the selected ``rows``."""
    return {k: float(np.median(y[rows & (n == k)] / x[rows & (n == k)]))
            for k in sorted(set(int(v) for v in n[rows]))}


def per_length_scale(ratios: dict[Any, float], n: int) -> float:
    """The per-length calibration at ``n`` tokens: interpolated in log2(n), flat outside."""
    ks = sorted(int(k) for k in ratios)
    vs = [ratios[k] if k in ratios else ratios[str(k)] for k in ks]
    return float(np.interp(np.log2(max(n, 1)), np.log2(ks), vs))


def tail(samples: np.ndarray) -> dict[str, float]:
    """Percentiles of repeated passes over their median (the machine's tail)."""
    med = float(np.median(samples))
    return {str(p): float(np.percentile(samples, p) / med) for p in TAIL_PERCENTILES}
