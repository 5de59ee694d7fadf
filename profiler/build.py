"""Building a table: grid measurement with resume, then calibration against full passes."""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tp_search.pruning.measure import fixed_inputs
from tp_search.pruning.measure.timing import time_interleaved
from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.macs import dense_macs, schedule_macs
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.runtime import get_backend

from tp_search.profiler.fingerprint import Fingerprint
from tp_search.profiler.grid import measure_grid
from tp_search.profiler.predictor import Predictor
from tp_search.profiler.build_settings import BuildSettings
from tp_search.profiler.table import COLUMNS, LatencyTable, default_grid

log = logging.getLogger("tp.profiler")


def random_schedule(shape, n: int, rng: random.Random, lo: float = 1.2, hi: float = 8.0
                    ) -> PruningConfig:
    """A random topk configuration with a MACs reduction in [lo, hi] at length n: varied
    first pruning layer, varied per-layer ratios (rejection sampling)."""
    L = shape.num_layers
    for _ in range(10000):
        first = rng.randint(1, max(1, L - 1))
        keep, k = [], 1.0
        for l in range(L):
            if l >= first and rng.random() < 0.7:
                k *= rng.uniform(0.25, 0.95)
            keep.append(max(k, 1.0 / n))
        cfg = PruningConfig.topk(shape, keep, method="random")
        r = dense_macs(n, shape) / schedule_macs(n, cfg.kept_counts(n), shape)
        if lo <= r <= hi:
            return cfg
    raise RuntimeError(f"no random schedule with MACs reduction in [{lo}, {hi}] at n={n}")


def calibration_lengths(pred: Predictor, max_len: int, budget_s: float, rounds: int = 6,
                        count: int = 5) -> list[int]:
    """Up to ``count`` lengths an octave apart, ending as close to max_len as the budget
    allows: the fit must hold from a few dozen tokens (where heavily pruned layers run) to
    long inputs, but full passes at 512 tokens of bert-base would cost as much as the whole
    grid. Cost per round ~ dense + one cheaper pruned pass per length."""
    dense = PruningConfig.dense(pred.shape)
    L = pred.shape.num_layers

    def cost(n: int) -> float:
        return 1.5 * pred.raw_counts(n, dense.kept_counts(n), [False] * L) / 1e3 * rounds

    def lengths(top: int) -> list[int]:
        return sorted({max(8, top >> k) for k in range(count)})

    top = max_len
    while top > 32 and sum(cost(n) for n in lengths(top)) > budget_s:
        top //= 2
    return lengths(top)


def calibrate(model: PrunedBert, pred: Predictor, s: BuildSettings, batch: int,
              grid_s: float = 0.0) -> dict:
    """Fit measured = scale * sum_of_parts + offset over a few real full passes (dense and
    random pruned schedules at a few lengths); the fit absorbs per-call overhead and the
    small bias of summing separately timed parts."""
    rng = random.Random(s.seed + 17)
    # a quarter of the grid's time, at least the configured budget
    lens = calibration_lengths(pred, min(s.max_len, pred.max_len),
                               max(s.calibration_budget_s, grid_s / 4))
    backend = get_backend(s.backend)
    run = backend.full_pass(model, pred.threads)
    xs, fns = [], {}
    # an exported backend compiles one graph per configuration: the same few schedules
    # serve every length there; the encoder itself draws fresh ones per length
    shared = [random_schedule(model.shape, lens[-1], rng) for _ in range(2)]
    for n in lens:
        ids = fixed_inputs(model, None, n, batch, seed=n)["input_ids"].to(s.device)
        cfgs = [PruningConfig.dense(model.shape)] + (shared if backend.exported else [
            random_schedule(model.shape, n, rng)
            for _ in range(max(1, s.calibration_configs // len(lens)))])
        for cfg in cfgs:
            kept, prunes = cfg.kept_counts(n), [cfg.prunes_at(l) for l in range(model.shape.num_layers)]
            xs.append(pred.raw_counts(n, kept, prunes))
            fns[str(len(fns))] = run(cfg, ids)
    # interleaved: every configuration sees the same drift of the machine
    ms = time_interleaved(fns, repeats=5, warmup=1, device=s.device)
    ys = [float(np.median(ms[str(i)])) for i in range(len(fns))]
    x, y = np.array(xs), np.array(ys)
    A = np.stack([x, np.ones_like(x)], 1)
    scale, offset = np.linalg.lstsq(A, y, rcond=None)[0]
    if not (0.8 <= scale <= 1.25):  # a wild fit from few points: fall back to a pure ratio
        scale, offset = float(np.median(y / x)), 0.0
    resid = (scale * x + offset - y) / y
    return {"scale": float(scale), "offset_ms": float(offset), "points": len(x), "lengths": lens,
            "raw_bias": float(np.median((x - y) / y)),
            "fit_max_abs_error": float(np.abs(resid).max())}


def _calibrate_combo(model: PrunedBert, table: LatencyTable, s: BuildSettings, b: int, t: int,
                     grid_s: float, sweeps: int) -> dict:
    """Calibrate one (batch, threads) of ``table`` and store it with the build's cost."""
    torch.set_num_threads(t)
    t0 = time.perf_counter()
    cal = calibrate(model, Predictor(table, batch=b, threads=t), s, b, grid_s)
    cal.update(sweeps=sweeps, grid_seconds=round(grid_s, 1),
               total_seconds=round(grid_s + time.perf_counter() - t0, 1))
    table.calibration[f"b{b}-t{t}"] = cal
    return cal


def build_table(model: PrunedBert, fp: Fingerprint, results: Path, s: BuildSettings,
                existing: LatencyTable | None = None) -> LatencyTable:
    """Measure every (batch, threads) combination missing from ``existing``; resumable.

    Finished grid points go to a ``.partial.csv`` beside the table as they complete, so an
    interrupted run loses at most the point in flight and the table itself is only ever
    written whole.
    """
    grid = s.grid or default_grid(s.max_len)
    backend = get_backend(s.backend)
    if backend.exported:  # exported graphs take >= 2 tokens (CLS, SEP): the predictor
        grid = [n for n in grid if n >= 2]  # holds the 2-token costs below that
    machine = fp.to_dict()
    entries = existing.entries if existing is not None else pd.DataFrame(columns=list(COLUMNS))
    calibration = dict(existing.calibration) if existing is not None else {}
    asked = [(b, t) for b in s.batches for t in s.threads]
    if s.force and len(entries):  # re-measure what was asked for; keep the other combos
        keep = ~pd.Series([(b, t) in asked for b, t in zip(entries.batch, entries.threads)],
                          index=entries.index)
        entries = entries[keep]
        redo = {f"b{b}-t{t}" for b, t in asked}
        calibration = {k: v for k, v in calibration.items() if k not in redo}
    key = {k: v for k, v in backend.key(1).items() if k != "threads"}
    table = LatencyTable(model.shape, machine, s.device, entries, grid,
                         settings={"measure": s.measure.__dict__, "max_len": s.max_len,
                                   "calibration_configs": s.calibration_configs,
                                   "seed": s.seed},
                         calibration=calibration, backend=s.backend, runtime=key)
    csv_path, _ = table.paths(results)
    partial = csv_path.with_suffix(".partial.csv")
    rows = pd.read_csv(partial).to_dict("records") if partial.is_file() and not s.force else []
    todo = [(b, t) for b, t in asked if (b, t) not in table.combos()
            or max(grid) > max(table.grid)]
    if not todo:
        log.info("table %s/%s already has batch %s x threads %s; nothing to measure "
                 "(--force re-measures)", fp.machine_id, table.stem, s.batches, s.threads)
        return table
    total = sum(len(grid) * s.measure.sweeps_for(t) for _, t in todo)  # measurements
    model = model.to(s.device).eval()
    with tqdm(total=total, desc=f"profiling {table.stem}", unit="pt") as bar:
        for b, t in todo:
            bar.set_description(f"profiling {table.stem} b{b} t{t}")
            done = {int(r["n"]) for r in rows if r["batch"] == b and r["threads"] == t
                    and r["component"] == "finish"}

            def save_point(n: int, new: list[dict], b=b, t=t) -> None:
                rows.extend(new)
                atomic_write_text(partial, pd.DataFrame(rows, columns=list(COLUMNS))
                                  .to_csv(index=False))

            t0 = time.perf_counter()
            torch.set_num_threads(t)
            measure_grid(backend.component_timers(model, t), b, t, grid, s.measure, done,
                         save_point, bar)
            new = pd.DataFrame([r for r in rows if r["batch"] == b and r["threads"] == t],
                               columns=list(COLUMNS))
            old = table.entries
            if len(old):
                old = old[~((old.batch == b) & (old.threads == t))]
            table.entries = pd.concat([d for d in (old, new) if len(d)], ignore_index=True)
            grid_s = time.perf_counter() - t0
            busy = int(new.busy.astype(bool).sum())
            if busy:
                log.warning("%d entries were measured while other processes used more than "
                            "%.0f%% of the CPU (flagged busy in the table)", busy,
                            s.measure.busy_threshold * 100)
            cal = _calibrate_combo(model, table, s, b, t, grid_s, s.measure.sweeps_for(t))
            log.info("b%d t%d: grid %.0fs, calibration scale %.3f offset %.3f ms (sum of parts "
                     "was %+.1f%% off)", b, t, grid_s, cal["scale"], cal["offset_ms"],
                     -cal["raw_bias"] * 100)
    table.grid = sorted(set(grid) | set(existing.grid if existing is not None else []))
    table.save(results)
    partial.unlink(missing_ok=True)
    return table


def recalibrate_table(model: PrunedBert, table: LatencyTable, results: Path, s: BuildSettings
                      ) -> LatencyTable:
    """Refit the calibration of the asked combos from new full passes, keeping the grid:
    the grid is the expensive part, the calibration a few seconds."""
    model = model.to(s.device).eval()
    for b in s.batches:
        for t in s.threads:
            if (b, t) not in table.combos():
                raise TpError(f"the table has no batch {b} x threads {t} to recalibrate; "
                              "measure it first (drop --recalibrate)")
            old = table.calibration.get(f"b{b}-t{t}", {})
            cal = _calibrate_combo(model, table, s, b, t, float(old.get("grid_seconds", 0.0)),
                                   old.get("sweeps", s.measure.sweeps_for(t)))
            log.info("b%d t%d recalibrated: scale %.3f offset %.3f ms at lengths %s", b, t,
                     cal["scale"], cal["offset_ms"], cal["lengths"])
    table.save(results)
    return table
