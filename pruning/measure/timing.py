"""Wall-clock timing that survives a noisy shared machine: warm-up, interleaving, medians."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int

    @classmethod
    def of(cls, samples_ms: np.ndarray) -> "Timing":
        s = np.asarray(samples_ms, dtype=float)
        return cls(float(np.median(s)), float(np.percentile(s, 10)),
                   float(np.percentile(s, 90)), float(s.mean()), len(s))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 50, warmup: int = 5,
                     device: str = "cpu", min_time_s: float = 0.0,
                     on_round: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run every function once per round, round after round, so that slow drifts of the
    machine (another process, frequency) hit all of them alike; returns ms per call."""
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                fns[n]()
        _sync(device)
        out: dict[str, list[float]] = {n: [] for n in names}
        start = time.perf_counter()
        r = 0
        while r < repeats or time.perf_counter() - start < min_time_s:
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                t0 = time.perf_counter()
                fns[n]()
                _sync(device)
                out[n].append((time.perf_counter() - t0) * 1e3)
            r += 1
            if on_round is not None:
                on_round(r)
    return {n: np.array(v) for n, v in out.items()}
