"""Check a prediction: time the chosen candidate on its own backend, on the workload.

Three runners are timed interleaved on the same requests: the chosen candidate (its
backend, its truncation), the dense model on the same backend at full length, and the
dense PyTorch fp32 model at full length (the reference every speedup was stated against
before backends existed). ``max`` workload: one input of ``seq_len`` real tokens, repeated;
``dev``: real dev inputs, each request timed in turn. The target is judged at the
workload's percentile of the chosen runner's latency.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.measure.timing import Timing, time_interleaved
from tp_search.pruning.data import Split, batches
from tp_search.pruning.model.encoder import PrunedBert

from tp_search.search.space.workload import Workload

Runner = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Measurement:
    timings: dict[str, Timing]  # "chosen", "dense" (same backend), "reference" (torch fp32)
    at_percentile: dict[str, float]  # each runner's latency at the workload's percentile
    percentile: float
    predicted_ms: float
    predicted_dense_ms: float
    target_ms: float
    repeats: int
    workload: str

    @property
    def chosen(self) -> Timing:
        return self.timings["chosen"]

    @property
    def dense(self) -> Timing:
        return self.timings["dense"]

    @property
    def chosen_ms(self) -> float:
        """The chosen candidate's latency at the workload's percentile."""
        return self.at_percentile["chosen"]

    @property
    def error_pct(self) -> float:
        """Prediction error of the chosen candidate, % of what it predicts: one input's
        median latency (max workload), or the percentile request's latency (dev workload,
        whose prediction is made at the percentile's length)."""
        ref = self.chosen.median_ms if self.workload == "max" else self.chosen_ms
        return 100.0 * (self.predicted_ms - ref) / ref

    @property
    def meets_target(self) -> bool:
        return self.chosen_ms <= self.target_ms

    @property
    def speedup(self) -> float:
        """Versus the dense model on the same backend (medians)."""
        return self.dense.median_ms / self.chosen.median_ms

    @property
    def speedup_vs_reference(self) -> float | None:
        ref = self.timings.get("reference")
        return None if ref is None else ref.median_ms / self.chosen.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_ms": self.chosen.to_dict(), "dense_ms": self.dense.to_dict(),
                "reference_ms": (self.timings["reference"].to_dict()
                                 if "reference" in self.timings else None),
                "percentile": self.percentile, "at_percentile_ms": self.at_percentile,
                "predicted_ms": self.predicted_ms, "predicted_dense_ms": self.predicted_dense_ms,
                "error_pct": self.error_pct, "meets_target": self.meets_target,
                "speedup_vs_dense": self.speedup,
                "speedup_vs_reference": self.speedup_vs_reference, "repeats": self.repeats,
                "workload": self.workload,
                "note": f"median of interleaved runs; the target is judged at the "
                        f"p{self.percentile:g} of the chosen runner's latency"}


def requests(model: PrunedBert, split: Split | None, workload: Workload, max_len: int,
             count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The workload's requests for a runner that truncates to ``max_len`` (0: none)."""
    n = min(workload.seq_len, max_len) if max_len else workload.seq_len
    if workload.kind == "max" or split is None or model.tokenizer is None:
        return [fixed_inputs(model, split, n, workload.batch, seed)]
    sub = split.subset(min(len(split), count * workload.batch), seed)
    return [{k: v for k, v in b.items() if k != "labels"}
            for b in batches(model.tokenizer, sub, n, workload.batch, bucket=False)]


def measure(runners: Mapping[str, tuple[Runner, int]], model: PrunedBert, split: Split | None,
            workload: Workload, predicted_ms: float, predicted_dense_ms: float,
            target_ms: float, threads: int, repeats: int = 30, warmup: int = 5,
            device: str = "cpu", seed: int = 0, dev_requests: int = 48) -> Measurement:
    """Time ``runners`` (name -> (runner, max_len)); "chosen" and "dense" are required."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        feeds = {name: [{k: v.to(device) for k, v in r.items()}
                        for r in requests(model, split, workload, max_len, dev_requests, seed)]
                 for name, (_, max_len) in runners.items()}
        count = len(next(iter(feeds.values())))
        rounds = repeats if count == 1 else max(3, repeats // 10) * count
        cursor = dict.fromkeys(runners, 0)

        def call(name: str) -> Callable[[], object]:
            runner, feed = runners[name][0], feeds[name]

            def run() -> object:
                b = feed[cursor[name] % len(feed)]
                cursor[name] += 1
                return runner(b)
            return run

        samples = time_interleaved({n: call(n) for n in runners}, repeats=rounds,
                                   warmup=warmup, device=device)
    finally:
        torch.set_num_threads(before)
    q = workload.percentile
    return Measurement({n: Timing.of(v) for n, v in samples.items()},
                       {n: float(np.percentile(v, q)) for n, v in samples.items()}, q,
                       predicted_ms, predicted_dense_ms, target_ms, rounds, workload.kind)
