"""How sure an accuracy difference is: the paired bootstrap over examples.

Two models scored on the same examples (a deployed model and the fp32 teacher on all dev
examples; two candidates on the proxy's held-out slice) differ by an amount whose noise is
that of the examples both saw. Resampling the examples with replacement, the same draw for
both, gives the distribution of the difference; its 2.5 and 97.5 percentiles are the 95%
interval. A "within X points" verdict holds only when the interval's lower end is above -X:
an interval that admits a larger loss is reported as such, however good the point value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..data import metrics

DRAWS = 2000


@dataclass(frozen=True)
class PairedDifference:
    """metric(a) - metric(b) on the same examples, in the metric's units (x100: points)."""

    a: float
    b: float
    diff: float
    low: float  # 95% interval of the difference
    high: float
    examples: int
    draws: int

    def within(self, points: float) -> bool:
        """True when the interval excludes a loss larger than ``points`` (x 0.01)."""
        return self.low >= -points / 100.0

    def verdict(self, points: float) -> str:
        d, lo, hi = (100 * v for v in (self.diff, self.low, self.high))
        ok = "within" if self.within(points) else "NOT shown within"
        return (f"{d:+.2f} points (95% CI {lo:+.2f} to {hi:+.2f}, paired bootstrap over "
                f"{self.examples} examples): {ok} {points:g} point(s) of the reference")

    def to_dict(self) -> dict:
        return asdict(self)


def paired_difference(metric: str, preds_a: Sequence, preds_b: Sequence, labels: Sequence,
                      draws: int = DRAWS, seed: int = 0) -> PairedDifference:
    """The difference of ``metric`` (a pruning.data.metrics name; its primary value) between
    two prediction lists on the same labelled examples, with its paired 95% interval."""
    a, b, y = np.asarray(preds_a), np.asarray(preds_b), np.asarray(labels)
    if not len(a) == len(b) == len(y) or len(y) == 0:
        raise ValueError("paired_difference needs two equally long, non-empty prediction lists")
    key = metrics.primary(metric)

    def score(p: np.ndarray, lab: np.ndarray) -> float:
        return metrics.compute(metric, p, lab)[key]

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(draws, len(y)))
    diffs = np.array([score(a[i], y[i]) - score(b[i], y[i]) for i in idx])
    sa, sb = score(a, y), score(b, y)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return PairedDifference(sa, sb, sa - sb, float(lo), float(hi), len(y), draws)
