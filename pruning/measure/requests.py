"""Requests of an input-adaptive model: per-example kept counts grouped as the workload
sends them, and the percentile a latency target is judged at.

A padded batch of threshold-pruned inputs runs every layer at the largest kept count in the
batch, so a request's cost is that of (its longest input, the per-layer maximum counts).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Request = tuple[int, list[int]]  # (real tokens, kept after each layer) of one request


def group_requests(lengths: Sequence[int], kept: Sequence[Sequence[int]], batch: int
                   ) -> list[Request]:
    """Per-example (length, kept counts) as requests of ``batch`` consecutive examples."""
    out = []
    for i in range(0, len(lengths), batch):
        n = max(lengths[i:i + batch])
        k = [max(col) for col in zip(*kept[i:i + batch])]
        out.append((int(n), [int(v) for v in k]))
    return out


def percentile_of(values: Sequence[float], percentile: float) -> float:
    """The percentile as the target is judged: an observed value (inverted CDF)."""
    return float(np.percentile(np.asarray(values), percentile, method="inverted_cdf"))
