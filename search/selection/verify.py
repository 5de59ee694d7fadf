"""Measuring runners on the workload, interleaved: the closed loop's candidates and the final
deployed model alike.

Every runner gets the same requests (truncated to its own ``max_len``): ``max`` workload,
one input of ``seq_len`` real tokens, repeated; ``dev``, the real dev inputs in turn. Rounds
alternate direction, so the machine's drift hits every runner alike. Samples are kept per
request, so a prediction can be compared request by request (its own length each) and a
backend's *tail* — the percentile over the median of repeated calls of one request — read
off its dense runner in the same window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from tp_search.pruning.data import Split, batches
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.measure.timing import Timing, time_interleaved
from tp_search.pruning.model.encoder import ForwardInfo, PrunedBert
from tp_search.search.space.workload import Workload, percentile_of

TimedCall = Callable[..., torch.Tensor]  # a runner: runner(batch) -> logits


def requests(model: PrunedBert, split: Split | None, workload: Workload, max_len: int,
             count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The workload's requests for a runner that truncates to ``max_len`` (0: none)."""
    n = min(workload.seq_len, max_len) if max_len else workload.seq_len
    if workload.kind == "max" or split is None or model.tokenizer is None:
        return [fixed_inputs(model, split, n, workload.batch, seed)]
    sub = split.subset(min(len(split), count * workload.batch), seed)
    return [{k: v for k, v in b.items() if k not in ("labels", "index")}
            for b in batches(model.tokenizer, sub, n, workload.batch, bucket=False)]


@dataclass(frozen=True)
class Timed:
    """One runner's latencies: ``samples[round, request]`` in ms."""

    samples: np.ndarray
    lengths: list[int]  # real tokens of each request's longest input (after truncation)

    def at(self, percentile: float) -> float:
        """An observed latency, as the target is judged (inverted CDF)."""
        return percentile_of(self.samples.ravel(), percentile)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples))

    def request_medians(self) -> list[float]:
        """Each request's median over the repeated rounds."""
        return [float(m) for m in np.median(self.samples, axis=0)]

    def timing(self) -> Timing:
        return Timing.of(self.samples.ravel())

    def tail(self, percentile: float) -> float:
        """Percentile over median of repeated calls of each request, pooled over requests."""
        per = self.samples / np.median(self.samples, axis=0, keepdims=True)
        return float(np.percentile(per, percentile))

    def ratio_to(self, predicted: list[float]) -> float:
        """Median over requests of measured median / predicted (same length each)."""
        med = np.median(self.samples, axis=0)
        return float(np.median(med / np.asarray(predicted)))


@dataclass(frozen=True)
class Window:
    timed: dict[str, Timed]
    seconds: float
    rounds: int
    feeds: dict[str, list[dict[str, torch.Tensor]]]  # each runner's requests


@torch.inference_mode()
def request_counts(model: PrunedBert, cfg: Any, feeds: list[dict[str, torch.Tensor]]
                   ) -> list[tuple[int, list[int]]]:
    """(real tokens, kept after each layer) of each request, from the PyTorch encoder: how an
    input-adaptive model's requests are predicted one by one."""
    out = []
    for f in feeds:
        info = ForwardInfo()
        model(f["input_ids"], f.get("attention_mask"), f.get("token_type_ids"), pruning=cfg,
              info=info)
        mask = f.get("attention_mask")
        n = int(mask.sum(1).max()) if mask is not None else f["input_ids"].shape[1]
        out.append((n, [int(k.max()) for k in info.kept]))
    return out


def predicted_requests(pred: Any, model: PrunedBert, cfg: Any,
                       feeds: list[dict[str, torch.Tensor]], lengths: list[int]) -> list[float]:
    """The prediction of each request: from its length (top-k) or its kept counts."""
    if cfg.policy == "threshold":
        prunes = [cfg.prunes_at(l) for l in range(cfg.shape.num_layers)]
        return [pred.predict_counts(n, k, prunes) for n, k in request_counts(model, cfg, feeds)]
    return [pred.predict(cfg, n) for n in lengths]


def time_runners(runners: Mapping[str, tuple[TimedCall, int]], model: PrunedBert,
                 split: Split | None, workload: Workload, threads: int, repeats: int = 30,
                 warmup: int = 5, device: str = "cpu", seed: int = 0,
                 dev_requests: int = 48) -> Window:
    """Time ``runners`` (name -> (runner, max_len)) interleaved on the workload."""
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

        t0 = time.perf_counter()
        samples = time_interleaved({n: call(n) for n in runners}, repeats=rounds,
                                   warmup=warmup, device=device)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    out = {}
    for name, v in samples.items():
        # warm-up calls advanced the cursor too: request j of round r is (warmup + i) % count
        order = (warmup + np.arange(len(v))) % count
        per = np.stack([v[order == j][: len(v) // count] for j in range(count)], 1)
        lengths = [int(f["attention_mask"].sum(1).max()) for f in feeds[name]]
        out[name] = Timed(per, lengths)
    return Window(out, seconds, rounds, feeds)


@dataclass(frozen=True)
class Measurement:
    """The final check of a deployed model: it, the dense model on its backend and the
    dense PyTorch fp32 model (the reference speedups were stated against), interleaved."""

    timings: dict[str, Timing]  # "chosen", "dense" (same backend), "reference" (torch fp32)
    at_percentile: dict[str, float]  # each runner's latency at the workload's percentile
    percentile: float
    predicted_ms: float
    predicted_dense_ms: float
    target_ms: float
    repeats: int
    workload: str
    spread: float = float("nan")  # the dense runner's percentile over its median: the tail
    # the chosen runner request by request: real tokens, predicted and measured median ms
    per_request: list[dict[str, float]] = field(default_factory=list)

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
                "workload": self.workload, "machine_spread": self.spread,
                "per_request": self.per_request,
                "per_request_median_abs_error_pct": (float(np.median([
                    abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in self.per_request]))
                    * 100 if self.per_request else None),
                "note": f"median of interleaved runs; the target is judged at the "
                        f"p{self.percentile:g} of the chosen runner's latency; machine_spread "
                        f"is the dense runner's p{self.percentile:g} over its median in the "
                        "same window"}


def measure(runners: Mapping[str, tuple[TimedCall, int]], model: PrunedBert,
            split: Split | None, workload: Workload, predictor: Any, cfg: Any,
            target_ms: float, threads: int, repeats: int = 30, warmup: int = 5,
            device: str = "cpu", seed: int = 0) -> Measurement:
    """Time ``runners`` (name -> (runner, max_len)); "chosen" (running ``cfg``) and "dense"
    are required. The chosen runner's requests are predicted one by one (from their kept
    counts for a threshold model) and its prediction is their percentile."""
    w = time_runners(runners, model, split, workload, threads, repeats, warmup, device, seed)
    q = workload.percentile
    chosen = w.timed["chosen"]
    per = predicted_requests(predictor, model, cfg, w.feeds["chosen"], chosen.lengths)
    dense_cfg = type(cfg).dense(cfg.shape)
    dense_pred = predicted_requests(predictor, model, dense_cfg, w.feeds["dense"],
                                    w.timed["dense"].lengths)
    return Measurement({n: t.timing() for n, t in w.timed.items()},
                       {n: t.at(q) for n, t in w.timed.items()}, q, percentile_of(per, q),
                       percentile_of(dense_pred, q), target_ms, w.rounds, workload.kind,
                       spread=w.timed["dense"].tail(q),
                       per_request=per_request_rows(chosen, per))


def per_request_rows(timed: Timed, predicted: list[float]) -> list[dict[str, float]]:
    """Request by request: real tokens, predicted and measured median ms."""
    return [{"tokens": n, "predicted_ms": p, "measured_ms": m}
            for n, p, m in zip(timed.lengths, predicted, timed.request_medians())]
