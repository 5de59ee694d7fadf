"""Validation: random pruning schedules measured end to end versus the prediction."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.measure.timing import time_interleaved
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.macs import reduction
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.runtime import get_backend

from tp_search.profiler.calibration import random_schedule
from tp_search.profiler.grid import reference_length, time_reference
from tp_search.profiler.predictor import Predictor


log = logging.getLogger("tp.profiler")


@dataclass
class ValidationSummary:
    samples: int
    seq_len: int
    batch: int
    threads: int
    median_abs_error: float  # fractions: 0.03 = 3%
    p90_abs_error: float
    within_10pct: float
    mean_signed_error: float
    max_abs_error: float
    dense_measured_ms: float
    dense_predicted_ms: float
    # (p90 - p10) / median of the dense model across rounds: how much the machine itself
    # moved during the validation window
    machine_spread: float
    window_s: float
    # the same figures for latency relative to dense (state-free, see validate())
    relative_median_abs_error: float
    relative_p90_abs_error: float
    relative_within_10pct: float
    # the reference pass in this window over the table's reference (1.0: as fast as when
    # the table was built), and the absolute figures with predictions scaled by it
    state: float = 1.0
    state_median_abs_error: float = float("nan")
    state_within_10pct: float = float("nan")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def validate(model: PrunedBert, pred: Predictor, seq_len: int, samples: int, device: str,
             seed: int = 0, repeats: int = 15) -> tuple[pd.DataFrame, ValidationSummary]:
    """Measure every schedule interleaved with the others, round after round, so each
    config's median covers the whole validation window: on a VM whose speed drifts, timing
    configs one after another would compare them across different machine states. The dense
    model rides along in every round; its spread across rounds is the machine's own noise."""
    rng = random.Random(seed)
    shape = model.shape
    cfgs = [random_schedule(shape, seq_len, rng) for _ in range(samples)]
    ids = fixed_inputs(model, None, seq_len, pred.batch, seed=seq_len)["input_ids"].to(device)
    backend = get_backend(pred.table.backend)  # the table's own backend
    run = backend.full_pass(model, pred.threads)
    fns = {str(i): run(c, ids) for i, c in enumerate(tqdm(
        cfgs, desc="building schedules", disable=not backend.exported, leave=False))}
    fns["dense"] = run(PruningConfig.dense(shape), ids)
    reference = pred.calibration.get("reference", {})
    ref = backend.component_timers(model, pred.threads)(
        pred.batch, int(reference.get("tokens", reference_length([pred.max_len]))))
    ref.warm()
    fns["ref"] = lambda: time_reference(ref)
    with tqdm(total=repeats, desc=f"validating b{pred.batch} t{pred.threads} n{seq_len}",
              unit="round") as bar:
        t0 = time.perf_counter()
        ms = time_interleaved(fns, repeats=repeats, warmup=1, device=device,
                              on_round=lambda r: bar.update(1))
        window = time.perf_counter() - t0
    rows = []
    d, pd_dense = ms["dense"], pred.dense(seq_len)
    state = float(np.median(ms["ref"]) / reference["ms"]) if reference.get("ms") else 1.0
    for i, cfg in enumerate(cfgs):
        m, kept = ms[str(i)], cfg.kept_counts(seq_len)
        measured, p = float(np.median(m)), pred.predict(cfg, seq_len)
        # speed relative to the dense model timed in the same round: immune to the
        # machine's state, so it isolates the table's shape from the machine's drift
        ratio = float(np.median(m / d))
        rows.append(dict(sample=i, keep=",".join(f"{k:.4f}" for k in cfg.keep),
                         first_pruning_layer=next(l for l in range(shape.num_layers)
                                                  if cfg.prunes_at(l)),
                         kept=",".join(map(str, kept)),
                         macs_reduction=reduction(cfg, seq_len),
                         measured_ms=measured, measured_p10_ms=float(np.percentile(m, 10)),
                         measured_p90_ms=float(np.percentile(m, 90)), predicted_ms=p,
                         error=(p - measured) / measured,
                         state_error=(p * state - measured) / measured,
                         measured_vs_dense=ratio,
                         predicted_vs_dense=p / pd_dense,
                         relative_error=(p / pd_dense - ratio) / ratio))
    df = pd.DataFrame(rows)
    err, rel = df.error.abs(), df.relative_error.abs()
    summary = ValidationSummary(
        samples=samples, seq_len=seq_len, batch=pred.batch, threads=pred.threads,
        median_abs_error=float(err.median()), p90_abs_error=float(err.quantile(0.9)),
        within_10pct=float((err <= 0.10).mean()), mean_signed_error=float(df.error.mean()),
        max_abs_error=float(err.max()), dense_measured_ms=float(np.median(d)),
        dense_predicted_ms=pd_dense,
        machine_spread=float((np.percentile(d, 90) - np.percentile(d, 10)) / np.median(d)),
        window_s=round(window, 1), relative_median_abs_error=float(rel.median()),
        relative_p90_abs_error=float(rel.quantile(0.9)),
        relative_within_10pct=float((rel <= 0.10).mean()), state=round(state, 4),
        state_median_abs_error=float(df.state_error.abs().median()),
        state_within_10pct=float((df.state_error.abs() <= 0.10).mean()))
    return df, summary


def self_validate(model: PrunedBert, table: Any, results: Path, batch: int, threads: int,
                  seq_len: int, samples: int = 4, repeats: int = 8, device: str = "cpu",
                  seed: int = 0) -> ValidationSummary:
    """A few random schedules timed against the new table, the error stored with it (the
    search's plan widens by the median |error|), and a warning beyond +-10%."""
    pred = Predictor(table, batch=batch, threads=threads)
    n = min(seq_len, pred.max_len)
    _, v = validate(model, pred, n, samples, device, seed=seed, repeats=repeats)
    table.calibration.setdefault(f"b{batch}-t{threads}", {})["validation"] = v.to_dict()
    table.save(results)
    if v.median_abs_error > 0.10:
        log.warning("%s/%s predicts %d random schedules at %d tokens with median |error| "
                    "%.1f%% (max %.1f%%, mean %+.1f%%; the machine's spread in that window "
                    "%.1f%%, relative to dense %.1f%%): the search plans %.1f%% wider",
                    table.machine_id, table.stem, samples, n, 100 * v.median_abs_error,
                    100 * v.max_abs_error, 100 * v.mean_signed_error, 100 * v.machine_spread,
                    100 * v.relative_median_abs_error, 100 * v.median_abs_error)
    else:
        log.info("%s/%s validated: median |error| %.1f%% over %d random schedules at %d "
                 "tokens", table.machine_id, table.stem, 100 * v.median_abs_error, samples, n)
    return v


def store_validation(table: Any, results: Path, combo: str, summaries: list[dict]) -> None:
    """Keep the worst (largest median |error|) of a table's validations with it: the
    search's plan widens by that error."""
    if summaries:
        worst = max(summaries, key=lambda v: v["median_abs_error"])
        keep = {k: v for k, v in worst.items() if k != "calibration"}
        table.calibration.setdefault(combo, {})["validation"] = keep
        table.save(results)
