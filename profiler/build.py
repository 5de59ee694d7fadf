"""Building a table: grid measurement with resume, then calibration against full passes."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from tp_search.profiler.build_settings import BuildSettings
from tp_search.profiler.calibration import calibrate
from tp_search.profiler.calibration_fit import AFFINE_TOLERANCE
from tp_search.profiler.fingerprint import Fingerprint
from tp_search.profiler.grid import finalize, measure_grid
from tp_search.profiler.predictor import Predictor
from tp_search.profiler.table import COLUMNS, LatencyTable, default_grid
from tp_search.pruning.core.atomic import atomic_write_text
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.runtime import get_backend

log = logging.getLogger("tp.profiler")


def _calibrate_combo(model: PrunedBert, table: LatencyTable, s: BuildSettings, b: int, t: int,
                     grid_s: float, sweeps: int, reference_ms: float | None) -> dict:
    """Calibrate one (batch, threads) of ``table`` and store it with the build's cost."""
    torch.set_num_threads(t)
    t0 = time.perf_counter()
    cal = calibrate(model, Predictor(table, batch=b, threads=t), s, b, grid_s, reference_ms)
    if cal["model"] != "affine":
        kind = (f"; pruning layers x{cal['prune_ratio']:.3f} (per kind: leaves "
                f"{cal['fit_max_abs_error'] * 100:.0f}%, one ratio per length "
                f"{cal['per_length_max_abs_error'] * 100:.0f}%)"
                if cal["model"] == "per-kind" else "")
        log.warning("b%d t%d: no affine fit of the parts to full passes holds within %.0f%% "
                    "(best leaves %.0f%%); calibrated per length instead (%s%s)", b, t,
                    AFFINE_TOLERANCE * 100, cal["affine_max_abs_error"] * 100,
                    ", ".join(f"{k} tokens x{v:.3f}" for k, v in cal["ratios"].items()), kind)
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
            mine, ref_ms = finalize([r for r in rows if r["batch"] == b and r["threads"] == t])
            new = pd.DataFrame(mine, columns=list(COLUMNS))
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
            cal = _calibrate_combo(model, table, s, b, t, grid_s, s.measure.sweeps_for(t),
                                   ref_ms)
            states = new.state.astype(float)
            log.info("b%d t%d: grid %.0fs (the machine's state across it %.2f-%.2f of its "
                     "median), calibration %s scale %.3f offset %.3f ms (sum of parts was "
                     "%+.1f%% off), tail p90/median %.3f", b, t, grid_s, states.min(),
                     states.max(), cal["model"], cal["scale"], cal["offset_ms"],
                     -cal["raw_bias"] * 100, cal["tail"]["90"])
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
            ref = old.get("reference", {})  # tables before "grid_ms" kept the grid's as "ms"
            cal = _calibrate_combo(model, table, s, b, t, float(old.get("grid_seconds", 0.0)),
                                   old.get("sweeps", s.measure.sweeps_for(t)),
                                   ref.get("grid_ms", ref.get("ms")))
            log.info("b%d t%d recalibrated: scale %.3f offset %.3f ms at lengths %s", b, t,
                     cal["scale"], cal["offset_ms"], cal["lengths"])
    table.save(results)
    return table
