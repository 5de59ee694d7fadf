"""Validation: random pruning schedules measured end to end versus the prediction."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pruning.encoder import PrunedBert
from pruning.macs import dense_macs, schedule_macs

from .build import measure_config, random_schedule
from .predictor import Predictor


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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def validate(model: PrunedBert, pred: Predictor, seq_len: int, samples: int, device: str,
             seed: int = 0, repeats: int = 15) -> tuple[pd.DataFrame, ValidationSummary]:
    rng = random.Random(seed)
    rows = []
    shape = model.shape
    for i in tqdm(range(samples), desc=f"validating b{pred.batch} t{pred.threads} n{seq_len}"):
        cfg = random_schedule(shape, seq_len, rng)
        ms = measure_config(model, cfg, seq_len, pred.batch, device, repeats=repeats)
        measured = float(np.median(ms))
        p = pred.predict(cfg, seq_len)
        kept = cfg.kept_counts(seq_len)
        rows.append(dict(sample=i, keep=",".join(f"{k:.4f}" for k in cfg.keep),
                         first_pruning_layer=next(l for l in range(shape.num_layers)
                                                  if cfg.prunes_at(l)),
                         kept=",".join(map(str, kept)),
                         macs_reduction=dense_macs(seq_len, shape) / schedule_macs(seq_len, kept, shape),
                         measured_ms=measured, measured_p10_ms=float(np.percentile(ms, 10)),
                         measured_p90_ms=float(np.percentile(ms, 90)), predicted_ms=p,
                         error=(p - measured) / measured))
    df = pd.DataFrame(rows)
    err = df.error.abs()
    summary = ValidationSummary(samples, seq_len, pred.batch, pred.threads,
                                float(err.median()), float(err.quantile(0.9)),
                                float((err <= 0.10).mean()), float(df.error.mean()),
                                float(err.max()))
    return df, summary
