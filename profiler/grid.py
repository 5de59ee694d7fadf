"""Measuring a latency table's grid: every token count timed with the backend's own pass
timer (``Backend.component_timers``: the encoder's layer methods on PyTorch, the component
graphs on an exported runtime), repeated within a budget, re-measured when other processes
load the CPU.
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
from tp_search.pruning.runtime.base import TimerFactory

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


@dataclass
class PointResult:
    samples: dict[str, np.ndarray]
    other_cpu: float
    busy: bool


@torch.inference_mode()
def measure_point(batch: int, n: int, s: MeasureSettings, timer_for: TimerFactory
                  ) -> PointResult:
    """Time one grid point with ``timer_for(batch, n)``, the backend's pass timer."""
    timer = timer_for(batch, n)
    for _ in range(s.warmup):  # first calls at a new shape pay one-off costs
        timer.warm()
    other = 1.0
    for attempt in range(s.retries + 1):
        if attempt:
            wait_for_quiet(s.busy_threshold, s.quiet_wait_s)
        samples: dict[str, list[float]] = {}
        with CpuWatch() as w:
            start = time.perf_counter()
            r = 0
            while r < s.min_repeats or (r < s.max_repeats and
                                        time.perf_counter() - start < s.point_budget_s):
                for k, v in (*timer.plain_pass().items(), *timer.pruning_pass().items()):
                    samples.setdefault(k, []).append(v)
                r += 1
        other = w.other
        if other <= s.busy_threshold:
            break
        log.debug("n=%d: other processes used %.0f%% of the CPU; re-measuring", n, other * 100)
    return PointResult({k: np.array(v) for k, v in samples.items()}, other,
                       other > s.busy_threshold)


def point_rows(res: PointResult, batch: int, threads: int, n: int) -> list[dict]:
    """Table rows of one grid point; the half-size finish is stored at n//2 only if that
    count has no full-size measurement of its own (it never overrides one)."""
    rows = []
    for comp, vals in res.samples.items():
        if comp == "finish_half":
            continue
        rows.append(dict(batch=batch, threads=threads, component=comp, n=1 if comp == "head"
                         else n, median_ms=float(np.median(vals)),
                         p10_ms=float(np.percentile(vals, 10)),
                         p90_ms=float(np.percentile(vals, 90)), repeats=len(vals),
                         other_cpu=round(res.other_cpu, 4), busy=res.busy))
    return rows


def merge(results: list[PointResult]) -> PointResult:
    keys = results[0].samples
    return PointResult({k: np.concatenate([r.samples[k] for r in results]) for k in keys},
                       max(r.other_cpu for r in results), any(r.busy for r in results))


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
    sweeps = s.sweeps_for(threads)
    if progress is not None and len(todo) < len(grid):
        progress.update((len(grid) - len(todo)) * sweeps)
    part = s.per_sweep(sweeps)
    acc: dict[int, list[PointResult]] = {}
    for k in range(sweeps):
        for n in (todo if k % 2 == 0 else todo[::-1]):  # alternate direction: no point
            res = measure_point(batch, n, part, timer_for)  # never last twice
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
