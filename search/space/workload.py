"""What the latency target is about: which inputs, and which percentile of their latency.

``max``: every request is one batch of ``seq_len`` real tokens — the worst case at that
maximum length (the constraint tp-search always had). ``dev``: the requests are the task's
real dev inputs, truncated to ``seq_len``. Either way a target is met when the latency at
``percentile`` (default 90) is within it: a measured median can sit under the target while
one request in five misses it.

Predicted latency grows with a request's length, so the predicted percentile latency is
the prediction at the request length of that percentile — one predictor call per check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.measure.requests import Request, group_requests, percentile_of  # noqa: F401

WORKLOADS = ("max", "dev")


@dataclass(frozen=True)
class Workload:
    kind: str  # "max" or "dev"
    seq_len: int  # the inputs' maximum length (longer inputs are truncated)
    batch: int = 1
    percentile: float = 90.0
    dev_lengths: tuple[int, ...] = ()  # real lengths of dev inputs (truncated to seq_len)

    def __post_init__(self) -> None:
        if self.kind not in WORKLOADS:
            raise TpError(f"unknown --workload {self.kind!r}: use max (one input of --seq-len "
                          "real tokens) or dev (the task's real dev inputs)")
        if not 0 < self.percentile <= 100:
            raise TpError(f"--percentile {self.percentile:g} must be in (0, 100]")
        if self.kind == "dev" and not self.dev_lengths:
            raise TpError("--workload dev needs dev inputs, and the task has none")

    def request_lengths(self, max_len: int = 0) -> list[int]:
        """Tokens per request after truncation to ``max_len`` (0: none). A dev request is a
        batch of consecutive dev inputs, padded to its longest."""
        cap = min(self.seq_len, max_len) if max_len else self.seq_len
        if self.kind == "max":
            return [cap]
        d, b = self.dev_lengths, self.batch
        return [min(max(d[i:i + b]), cap) for i in range(0, len(d), b)]

    def length(self, max_len: int = 0) -> int:
        """The request length at the workload's percentile."""
        return int(np.percentile(self.request_lengths(max_len), self.percentile,
                                 method="inverted_cdf"))

    def predict(self, predictor: Any, cfg: PruningConfig, max_len: int = 0) -> float:
        """Predicted latency (ms) at the percentile: latency grows with length, so it is the
        prediction at the percentile's request length."""
        return predictor.predict(cfg, self.length(max_len))

    def predict_requests(self, predictor: Any, cfg: PruningConfig,
                         requests: Sequence[Request]) -> float:
        """The percentile of per-request predictions, each from its own kept counts (an
        input-adaptive policy: length no longer orders latency)."""
        return percentile_of(per_request(predictor, cfg, requests), self.percentile)

    def describe(self, short: bool = False) -> str:
        p = f"p{self.percentile:g}"
        if self.kind == "max":
            if short:
                return f"{p}, one input of {self.seq_len} real tokens, batch {self.batch}"
            return (f"one input of {self.seq_len} real tokens (the worst case at max length "
                    f"{self.seq_len}), batch {self.batch}; the target holds for the {p} "
                    "of its measured latency")
        n = len(self.request_lengths())
        if short:
            return f"{p} over {n} dev requests (<= {self.seq_len} tokens), batch {self.batch}"
        return (f"{n} requests of the task's real dev inputs truncated to {self.seq_len} "
                f"tokens (median {int(np.median(self.request_lengths()))}, {p} "
                f"{self.length()} tokens), batch {self.batch}; the target holds for the {p} "
                "of per-request latency")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq_len": self.seq_len, "batch": self.batch,
                "percentile": self.percentile, "requests": len(self.request_lengths()),
                "percentile_length": self.length(), "note": self.describe()}


def per_request(predictor: Any, cfg: PruningConfig, requests: Sequence[Request]
                ) -> list[float]:
    prunes = [cfg.prunes_at(l) for l in range(cfg.shape.num_layers)]
    return [predictor.predict_counts(n, kept, prunes) for n, kept in requests]


def dev_requests(lengths: Sequence[int], seq_len: int) -> tuple[int, ...]:
    """Dev input lengths capped at ``seq_len``, in the dev subset's order."""
    return tuple(min(int(n), seq_len) for n in lengths)
