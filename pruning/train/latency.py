"""The latency model training can be constrained by, passed in by the caller.

Training sits below the profiler in the layering, so it never looks tables up itself: the
entry point (tp-train, the pipeline) builds a ``profiler.Predictor`` and hands it over as
anything that satisfies ``LatencyModel``.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

import numpy as np
from torch import Tensor

from tp_search.pruning.measure.accuracy import EvalResult
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import TpError

log = logging.getLogger("tp.train")


class LatencyModel(Protocol):
    """Predicted latency (ms) of the pruned encoder on one machine, batch and thread count."""

    machine_id: str
    max_len: int

    def predict(self, cfg: PruningConfig, seq_len: int) -> float: ...

    def predict_counts(self, n: int, kept: Sequence[int], prunes: Sequence[bool]) -> float: ...

    def dense(self, seq_len: int) -> float: ...

    def torch_latency(self, n: float, kept: Tensor, prune_prob: Tensor | None = None
                      ) -> Tensor: ...


def require(latency: LatencyModel | None, what: str) -> LatencyModel:
    if latency is None:
        raise TpError(f"{what} needs this machine's latency table: run tp-profile for the "
                      "model first (or pass --machine ID for another machine's table)")
    return latency


def predicted_latency(cfg: PruningConfig, r: EvalResult, latency: LatencyModel | None,
                      threads: int, seq_len: int) -> dict[str, Any] | None:
    """Predicted latency of the final model, for metrics.json (None without a table)."""
    if latency is None:
        return None
    try:
        L = cfg.shape.num_layers
        prunes = [cfg.prunes_at(l) for l in range(L)]
        dense = [latency.predict_counts(n, [n] * L, [False] * L) for n in r.lengths]
        mine = [latency.predict_counts(n, k, prunes) for n, k in zip(r.lengths, r.kept)]
        out: dict[str, Any] = {"machine": latency.machine_id, "batch": 1, "threads": threads,
                               "dev_mean_ms": float(np.mean(mine)),
                               "dev_mean_dense_ms": float(np.mean(dense))}
        out["dev_speedup"] = out["dev_mean_dense_ms"] / out["dev_mean_ms"]
        if cfg.policy != "threshold":
            out.update(seq_len=seq_len, ms=latency.predict(cfg, seq_len),
                       dense_ms=latency.dense(seq_len))
            out["speedup"] = out["dense_ms"] / out["ms"]
        return out
    except TpError as e:  # e.g. dev lengths beyond the table: metrics go without latency
        log.debug("no predicted latency: %s", e)
        return None
