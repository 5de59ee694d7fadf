"""Measuring a latency table's grid: every token count timed with the backend's own pass
timer (``Backend.component_timers``: the encoder's layer methods on PyTorch, the component
graphs on an exported runtime), repeated within a budget, re-measured when other processes
load the CPU.

A shared VM changes speed on its own: on the 2-core EPYC VMs this project runs on, 2-second
medians of one fixed pass wander ±10-17% (cv 10%) while the ratio of two passes timed back
to back stays within ~3% (benchmarks/machine_drift.py, results/<machine>/). So every repeat
of a grid point also times a fixed *reference* pass (a plain pass at ``reference_length``
tokens), and the point is stored in reference units: each sample divided by the reference
of its own repeat. The table's shape is then the machine's, not the state it was in while
each point happened to be measured; ``finalize`` turns reference units back into ms at the
median reference of the whole build.

Limit, measured on intel-xeon-f6m167-2c-amx-6d3967: there the reference is slowed by the work
timed beside it (the per-point state rises with the point's length, 0.79 to 1.72 on ov-int8),
so reference units compress the long points; the calibration (fitted per length when no
affine fit holds) absorbs it at its lengths, at the level of full passes
(``profiler/calibration.py``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import psutil
import torch

from tp_search.profiler.build_settings import MeasureSettings
from tp_search.pruning.runtime.base import PassTimer, TimerFactory

log = logging.getLogger("tp.profiler")


def wait_for_quiet(threshold: float, max_wait_s: float, window_s: float = 0.5) -> bool:
    """Sleep until other processes use at most ``threshold`` of the CPU over a window, or
    ``max_wait_s`` passes; True if the machine went quiet. A measurement taken while a
    training job shares the cores is 20-80% off, so waiting beats flagging."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        with CpuWatch() as w:
            time.sleep(window_s)
        if w.other <= threshold:
            return True
        if time.perf_counter() >= deadline:
            return False
        log.info("machine busy (other processes use %.0f%% of the CPU); waiting", w.other * 100)


class CpuWatch:
    """Share of the machine's CPU used by *other* processes while a block runs."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.ncpu = psutil.cpu_count() or 1

    def __enter__(self) -> "CpuWatch":
        self.t0 = time.perf_counter()
        self.sys0 = psutil.cpu_times()
        self.me0 = self.me.cpu_times()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        s1, m1 = psutil.cpu_times(), self.me.cpu_times()
        busy = (s1.user - self.sys0.user) + (s1.system - self.sys0.system) + \
            (getattr(s1, "nice", 0) - getattr(self.sys0, "nice", 0))
        mine = (m1.user - self.me0.user) + (m1.system - self.me0.system)
        self.other = max(0.0, (busy - mine) / (wall * self.ncpu))


def reference_length(grid: Iterable[int]) -> int:
    """Tokens of the reference pass: short enough to cost little, long enough to run the
    same kernels as the grid."""
    return min(32, max(2, max(grid)))


def time_reference(ref: PassTimer) -> float:
    """One reference pass (a plain pass), ms."""
    t0 = time.perf_counter()
    ref.plain_pass()
    return (time.perf_counter() - t0) * 1e3


@dataclass
class PointResult:
    samples: dict[str, np.ndarray]  # per repeat, in reference units (see the module doc)
    other_cpu: float
    busy: bool
    ref_ms: np.ndarray  # the reference pass of each repeat, ms


@torch.inference_mode()
def measure_point(batch: int, n: int, s: MeasureSettings, timer_for: TimerFactory,
                  ref: PassTimer) -> PointResult:
    """Time one grid point with ``timer_for(batch, n)``, the backend's pass timer, each
    repeat beside one reference pass ``ref``."""
    timer = timer_for(batch, n)
    for _ in range(s.warmup):  # first calls at a new shape pay one-off costs
        timer.warm()
    other = 1.0
    for attempt in range(s.retries + 1):
        if attempt:
            wait_for_quiet(s.busy_threshold, s.quiet_wait_s)
        samples: dict[str, list[float]] = {}
        refs: list[float] = []
        with CpuWatch() as w:
            start = time.perf_counter()
            r = 0
            while r < s.min_repeats or (r < s.max_repeats and
                                        time.perf_counter() - start < s.point_budget_s):
                a = time_reference(ref)
                parts = (*timer.plain_pass().items(), *timer.pruning_pass().items())
                b = time_reference(ref)
                unit = (a + b) / 2  # the machine's state around this repeat
                refs.append(unit)
                for k, v in parts:
                    samples.setdefault(k, []).append(v / unit)
                r += 1
        other = w.other
        if other <= s.busy_threshold:
            break
        log.debug("n=%d: other processes used %.0f%% of the CPU; re-measuring", n, other * 100)
    return PointResult({k: np.array(v) for k, v in samples.items()}, other,
                       other > s.busy_threshold, np.array(refs))


def point_rows(res: PointResult, batch: int, threads: int, n: int) -> list[dict]:
    """Table rows of one grid point, in reference units until ``finalize``; the half-size
    finish is not stored (a count's own full-size measurement always exists)."""
    rows = []
    ref = float(np.median(res.ref_ms))
    for comp, vals in res.samples.items():
        if comp == "finish_half":
            continue
        rows.append(dict(batch=batch, threads=threads, component=comp, n=1 if comp == "head"
                         else n, median_ms=float(np.median(vals)),
                         p10_ms=float(np.percentile(vals, 10)),
                         p90_ms=float(np.percentile(vals, 90)), repeats=len(vals),
                         other_cpu=round(res.other_cpu, 4), busy=res.busy, ref_ms=ref))
    return rows


def finalize(rows: list[dict]) -> tuple[list[dict], float]:
    """Rows in ms at the build's median reference (returned too), with each point's state
    (its reference over that median) recorded."""
    ref = float(np.median([r["ref_ms"] for r in rows]))
    out = []
    for r in rows:
        out.append({**r, **{k: r[k] * ref for k in ("median_ms", "p10_ms", "p90_ms")},
                    "state": round(r["ref_ms"] / ref, 4)})
    return out, ref


def merge(results: list[PointResult]) -> PointResult:
    keys = results[0].samples
    return PointResult({k: np.concatenate([r.samples[k] for r in results]) for k in keys},
                       max(r.other_cpu for r in results), any(r.busy for r in results),
                       np.concatenate([r.ref_ms for r in results]))


def measure_grid(timer_for: TimerFactory, batch: int, threads: int, grid: Iterable[int],
                 s: MeasureSettings, done: set[int], on_point: Callable[[int, list[dict]], None],
                 progress=None) -> None:
    """Measure every grid point not in ``done``; ``on_point`` persists each as it finishes
    (after its last sweep; an interrupted sweep is measured again on resume).

    The head is measured with every point but only kept once (n=1 row) by the caller.
    """
    torch.set_num_threads(threads)
    grid = list(grid)
    todo = [n for n in grid if n not in done]
    ref = timer_for(batch, reference_length(grid))
    ref.warm()
    sweeps = s.sweeps_for(threads)
    if progress is not None and len(todo) < len(grid):
        progress.update((len(grid) - len(todo)) * sweeps)
    part = s.per_sweep(sweeps)
    acc: dict[int, list[PointResult]] = {}
    for k in range(sweeps):
        for n in (todo if k % 2 == 0 else todo[::-1]):  # alternate direction: no point
            res = measure_point(batch, n, part, timer_for, ref)  # never last twice
            acc.setdefault(n, []).append(res)
            if k == sweeps - 1:
                res = merge(acc.pop(n))
                rows = point_rows(res, batch, threads, n)
                if n != grid[0]:  # the head's cost does not depend on n: stored once
                    rows = [r for r in rows if r["component"] != "head"]
                on_point(n, rows)
            if progress is not None:
                progress.set_postfix(n=n, busy=f"{res.other_cpu:.0%}", sweep=f"{k + 1}/{sweeps}")
                progress.update(1)
