"""Check a prediction: time the chosen configuration with the real pruned encoder.

Dense and chosen run interleaved on the same fixed inputs (``seq_len`` real tokens each, no
padding), with the thread count of the workload; medians are compared with the predictor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pruning.bench import fixed_inputs
from pruning.config import PruningConfig
from pruning.data import Split
from pruning.encoder import PrunedBert
from pruning.timing import Timing, time_interleaved


@dataclass(frozen=True)
class Measurement:
    dense: Timing
    chosen: Timing
    predicted_ms: float
    predicted_dense_ms: float
    target_ms: float
    repeats: int

    @property
    def error_pct(self) -> float:
        """Prediction error of the chosen configuration, % of the measured median."""
        return 100.0 * (self.predicted_ms - self.chosen.median_ms) / self.chosen.median_ms

    @property
    def meets_target(self) -> bool:
        return self.chosen.median_ms <= self.target_ms

    @property
    def speedup(self) -> float:
        return self.dense.median_ms / self.chosen.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {"dense_ms": self.dense.to_dict(), "chosen_ms": self.chosen.to_dict(),
                "predicted_ms": self.predicted_ms, "predicted_dense_ms": self.predicted_dense_ms,
                "error_pct": self.error_pct, "meets_target": self.meets_target,
                "speedup_vs_dense": self.speedup, "repeats": self.repeats,
                "note": "one input batch of seq_len real tokens (no padding), median of "
                        "interleaved runs"}


def measure(model: PrunedBert, cfg: PruningConfig, split: Split | None, seq_len: int,
            batch: int, threads: int, predicted_ms: float, predicted_dense_ms: float,
            target_ms: float, repeats: int = 30, warmup: int = 5, device: str = "cpu",
            seed: int = 0) -> Measurement:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model.to(device).eval()
        x = {k: v.to(device) for k, v in fixed_inputs(model, split, seq_len, batch, seed).items()}
        dense = PruningConfig.dense(model.shape)

        def run(c: PruningConfig):
            return lambda: model(x["input_ids"], x["attention_mask"], x["token_type_ids"],
                                 pruning=c)

        samples = time_interleaved({"dense": run(dense), "chosen": run(cfg)}, repeats=repeats,
                                   warmup=warmup, device=device)
    finally:
        torch.set_num_threads(before)
    return Measurement(Timing.of(samples["dense"]), Timing.of(samples["chosen"]),
                       predicted_ms, predicted_dense_ms, target_ms, repeats)
