"""The calibration's arithmetic, apart from any timing: the fit of the table's parts to full
passes (relative least squares, or per length when no affine fit holds), its evaluation at
any length, and a backend's tail from repeated passes."""
from __future__ import annotations

from typing import Any

import numpy as np

AFFINE_TOLERANCE = 0.10  # the largest relative residual an affine calibration may leave
SCALE_RANGE = (0.7, 1.4)  # a plausible affine scale (parts vs full passes)
TAIL_PERCENTILES = (50, 75, 90, 95, 99)


def fit(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """The calibration of parts ``x`` against full passes ``y`` at input lengths ``n``."""
    A = np.stack([x / y, 1.0 / y], 1)
    scale, offset = np.linalg.lstsq(A, np.ones_like(y), rcond=None)[0]
    resid = (scale * x + offset) / y - 1.0
    affine_err = float(np.abs(resid).max())
    out: dict[str, Any] = {"affine_max_abs_error": affine_err}
    if SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] and affine_err <= AFFINE_TOLERANCE:
        return out | {"model": "affine", "scale": float(scale), "offset_ms": float(offset),
                      "fit_max_abs_error": affine_err}
    lengths = sorted(set(int(v) for v in n))
    ratios = {k: float(np.median(y[n == k] / x[n == k])) for k in lengths}
    pred = np.array([per_length_scale(ratios, int(k)) for k in n]) * x
    return out | {"model": "per-length", "scale": 1.0, "offset_ms": 0.0,
                  "ratios": {str(k): v for k, v in ratios.items()},
                  "fit_max_abs_error": float(np.abs(pred / y - 1.0).max())}


def per_length_scale(ratios: dict[Any, float], n: int) -> float:
    """The per-length calibration at ``n`` tokens: interpolated in log2(n), flat outside."""
    ks = sorted(int(k) for k in ratios)
    vs = [ratios[k] if k in ratios else ratios[str(k)] for k in ks]
    return float(np.interp(np.log2(max(n, 1)), np.log2(ks), vs))


def tail(samples: np.ndarray) -> dict[str, float]:
    """Percentiles of repeated passes over their median (the machine's tail)."""
    med = float(np.median(samples))
    return {str(p): float(np.percentile(samples, p) / med) for p in TAIL_PERCENTILES}
