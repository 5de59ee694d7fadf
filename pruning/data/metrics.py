"""GLUE-style evaluation metrics as small pure functions (no sklearn dependency).

Degenerate inputs (a constant predictor, no positive class) give 0.0 rather than NaN so a
headline number can always be compared and sorted during a search.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from tp_search.pruning.core.errors import TpError

# metric name -> (keys returned by compute, headline key), following GLUE conventions.
METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "accuracy": (("accuracy",), "accuracy"),
    "f1": (("accuracy", "f1"), "f1"),  # MRPC / QQP
    "matthews": (("matthews",), "matthews"),  # CoLA
    "pearson_spearman": (("pearson", "spearman"), "pearson"),  # STS-B
}


def _arrays(preds: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"preds and labels must be 1-D and equally long, got {p.shape} and {y.shape}")
    if p.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(preds: Sequence, labels: Sequence) -> float:
    p, y = _arrays(preds, labels)
    return float(np.mean(p == y))


def f1(preds: Sequence, labels: Sequence) -> float:
    """Binary F1 of the positive class 1 (the GLUE MRPC/QQP convention)."""
    p, y = _arrays(preds, labels)
    tp = float(np.sum((p == 1) & (y == 1)))
    fp = float(np.sum((p == 1) & (y != 1)))
    fn = float(np.sum((p != 1) & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(preds: Sequence, labels: Sequence) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); equals the binary MCC for 2 classes."""
    p, y = _arrays(preds, labels)
    classes = np.union1d(p, y)
    cm = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(cm, (np.searchsorted(classes, y), np.searchsorted(classes, p)), 1)
    t, pk = cm.sum(axis=1), cm.sum(axis=0)  # true / predicted counts per class
    c, s = np.trace(cm), cm.sum()
    denom = math.sqrt((s * s - pk @ pk) * (s * s - t @ t))
    return 0.0 if denom == 0 else float((c * s - t @ pk) / denom)


def pearson(preds: Sequence, labels: Sequence) -> float:
    p, y = _arrays(preds, labels)
    p, y = p.astype(np.float64) - p.mean(), y.astype(np.float64) - y.mean()
    denom = math.sqrt(float(p @ p) * float(y @ y))
    return 0.0 if denom == 0 else float(p @ y / denom)


def spearman(preds: Sequence, labels: Sequence) -> float:
    """Pearson correlation of average ranks, so ties are handled like scipy.stats.spearmanr."""
    p, y = _arrays(preds, labels)
    return pearson(rankdata(p), rankdata(y))


def compute(metric_name: str, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """All numbers GLUE reports for ``metric_name`` (e.g. "f1" gives accuracy and f1)."""
    keys, _ = _lookup(metric_name)
    fns = {"accuracy": accuracy, "f1": f1, "matthews": matthews_corrcoef,
           "pearson": pearson, "spearman": spearman}
    return {k: fns[k](preds, labels) for k in keys}


def primary(metric_name: str) -> str:
    """The key of ``compute``'s result used as the single headline number."""
    return _lookup(metric_name)[1]


def _lookup(metric_name: str) -> tuple[tuple[str, ...], str]:
    if metric_name not in METRICS:
        raise TpError(f"unknown metric {metric_name!r}: use one of {', '.join(METRICS)}")
    return METRICS[metric_name]
