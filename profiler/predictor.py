"""Predict the latency of any pruning configuration from a lookup table.

Token counts are integers, so every component is interpolated once onto every count
1..max_len; a prediction is then a few list look-ups per layer (microseconds), which the
search calls thousands of times. A torch version of the same piecewise-linear curves is
differentiable in *expected* token counts, for training under a latency constraint.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from tp_search.pruning.config import ModelShape, PruningConfig
from tp_search.pruning.core.errors import TpError

from tp_search.profiler.calibration_fit import per_length_scale
from tp_search.profiler.table import LatencyTable


class Predictor:
    """Latency of the pruned encoder for one (table, batch, threads)."""

    def __init__(self, table: LatencyTable, batch: int = 1, threads: int = 1) -> None:
        self.table, self.batch, self.threads = table, batch, threads
        self.results: str | None = None  # the results root it was loaded from (store.py)
        self.shape: ModelShape = table.shape
        self._grid: dict[str, tuple[list[int], list[float]]] = {
            c: table.component(c, batch, threads)
            for c in ("embed", "attn_sdpa", "attn_probs", "select", "finish")}
        # this (batch, threads) may have been profiled to a shorter length than the table
        self.max_len = min(xs[-1] for xs, _ in self._grid.values())
        ns = np.arange(self.max_len + 1)
        self._lut: dict[str, list[float]] = {
            c: np.interp(ns, xs, ys).tolist() for c, (xs, ys) in self._grid.items()}
        self.head_ms = float(table.component("head", batch, threads)[1][0])
        self.calibration = table.calibration.get(f"b{batch}-t{threads}", {})
        cal = self.calibration
        self.scale = float(cal.get("scale", 1.0))
        self.offset_ms = float(cal.get("offset_ms", 0.0))
        self.ratios = cal.get("ratios") if cal.get("model") in ("per-length", "per-kind") \
            else None
        # per-kind: the pruning layers' parts have a ratio of their own (calibration_fit)
        self.prune_ratio = (float(cal["prune_ratio"]) if cal.get("model") == "per-kind"
                            else None)
        # measured / predicted, refitted from real passes by the search's closed loop
        self.correction = float(cal.get("refit", {}).get("correction", 1.0))

    def calibrated(self, raw_ms: Any, n: int, pruned_ms: Any = 0.0) -> Any:
        """The sum of parts at input length ``n`` (``pruned_ms`` of it in pruning layers),
        calibrated against full passes."""
        if self.prune_ratio is not None:
            rest = raw_ms - pruned_ms
            return self.correction * (per_length_scale(self.ratios, n) * rest
                                      + self.prune_ratio * pruned_ms)
        if self.ratios is not None:
            return self.correction * per_length_scale(self.ratios, n) * raw_ms
        return self.correction * (self.scale * raw_ms + self.offset_ms)

    def tail(self, percentile: float) -> float:
        """The backend's latency at ``percentile`` over its median, measured with the
        table's calibration (1.0 when the table predates it): what a percentile target
        must plan for. A tail the search's closed loop measured since counts only when
        larger: one window of a few dozen rounds is one sample of a noisy machine."""
        t = self.calibration.get("tail")
        table = 1.0
        if t:
            ps = sorted(float(p) for p in t)
            table = float(np.interp(percentile, ps, [t[k] for k in sorted(t, key=float)]))
        refit = self.calibration.get("refit") or {}
        if refit.get("tail") and refit.get("percentile") == percentile:
            return max(table, float(refit["tail"]))
        return table

    @property
    def machine_id(self) -> str:
        return self.table.machine_id

    def _check(self, n: int) -> None:
        if not 1 <= n <= self.max_len:
            raise TpError(f"sequence length {n} is outside the latency table (1..{self.max_len});"
                          f" profile with tp-profile --max-len {max(n, self.max_len)}")

    def raw_parts(self, n: int, kept: Sequence[int], prunes: Sequence[bool]
                  ) -> tuple[float, float]:
        """Sum of parts (uncalibrated) for one input of n tokens keeping kept[l] after layer
        l, and the share of it spent in pruning layers."""
        lut = self._lut
        t = lut["embed"][n] + self.head_ms
        sdpa, probs, sel, fin = lut["attn_sdpa"], lut["attn_probs"], lut["select"], lut["finish"]
        n_in, pruned = n, 0.0
        for k, p in zip(kept, prunes):
            if p:
                c = probs[n_in] + sel[n_in] + fin[k]
                pruned += c
                t += c
            else:
                t += sdpa[n_in] + fin[n_in]
            n_in = k
        return t, pruned

    def raw_counts(self, n: int, kept: Sequence[int], prunes: Sequence[bool]) -> float:
        """Sum of parts (uncalibrated) for one input of n tokens keeping kept[l] after layer l."""
        return self.raw_parts(n, kept, prunes)[0]

    def predict_counts(self, n: int, kept: Sequence[int], prunes: Sequence[bool]) -> float:
        self._check(n)
        raw, pruned = self.raw_parts(n, kept, prunes)
        return self.calibrated(raw, n, pruned)

    def predict(self, cfg: PruningConfig, seq_len: int) -> float:
        """Latency (ms) of one batch of ``self.batch`` inputs with ``seq_len`` real tokens."""
        self._check(seq_len)
        if cfg.policy == "threshold":
            raise TpError("threshold configurations keep input-dependent counts; use "
                          "predict_counts with measured kept counts")
        L = self.shape.num_layers
        kept = cfg.kept_counts(seq_len)
        prunes = [cfg.prunes_at(l) for l in range(L)]
        return self.predict_counts(seq_len, kept, prunes)

    def dense(self, seq_len: int) -> float:
        return self.predict(PruningConfig.dense(self.shape), seq_len)

    # ---- differentiable form -----------------------------------------------------------
    def torch_cost(self, component: str, n: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear cost (ms) at real-valued token counts; gradients flow into n."""
        xs, ys = self._grid[component]
        x = torch.tensor(xs, dtype=n.dtype, device=n.device)
        y = torch.tensor(ys, dtype=n.dtype, device=n.device)
        nc = n.clamp(float(xs[0]), float(xs[-1]))
        i = torch.searchsorted(x, nc.detach().contiguous()).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        return y0 + (nc - x0) * (y1 - y0) / (x1 - x0)

    def torch_latency(self, n: float, kept: torch.Tensor, prune_prob: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Expected latency for real-valued kept counts ``kept[l]`` (shape [L]).

        ``prune_prob[l]``: probability that layer l prunes (its scoring attention and
        selection are paid only then); defaults to 1 where kept < tokens entering.
        """
        n_t = torch.as_tensor(float(n), dtype=kept.dtype)
        n_in = torch.cat([n_t.view(1), kept[:-1]])
        if prune_prob is None:
            prune_prob = (kept < n_in - 1e-6).to(kept.dtype)
        fin = self.torch_cost("finish", kept)
        scoring = self.torch_cost("attn_probs", n_in) + self.torch_cost("select", n_in)
        attn = prune_prob * scoring + (1 - prune_prob) * self.torch_cost("attn_sdpa", n_in)
        t = self.torch_cost("embed", n_t.view(1)).sum() + self.head_ms + (attn + fin).sum()
        pruned = (prune_prob * (scoring + fin)).sum()
        return self.calibrated(t, int(round(float(n))), pruned)
