"""How a table is measured and built: plain dataclasses (no torch, so ``tp-profile --help``
starts fast)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from tp_search.pruning.runtime.registry import REFERENCE


@dataclass
class MeasureSettings:
    min_repeats: int = 3
    max_repeats: int = 40
    point_budget_s: float = 0.3  # stop repeating a grid point after this long
    warmup: int = 1  # one-layer warm-ups per point (new shapes), not whole passes
    busy_threshold: float = 0.10  # other processes' share of the machine's CPU
    retries: int = 2  # re-measure a busy point this many times before flagging it
    quiet_wait_s: float = 30.0  # before a retry, wait up to this long for the machine to calm
    # Passes over the whole grid; each point's repeats are split across them. None: 1 at one
    # thread, 3 at more (multi-thread speed on a shared VM switches between states ~25%
    # apart for tens of seconds at a time; several sweeps average the states instead of
    # freezing whichever one a point happened to fall in).
    sweeps: int | None = None

    def sweeps_for(self, threads: int) -> int:
        return self.sweeps if self.sweeps else (1 if threads == 1 else 3)

    def per_sweep(self, sweeps: int) -> "MeasureSettings":
        return replace(self, min_repeats=max(1, -(-self.min_repeats // sweeps)),
                       max_repeats=max(1, -(-self.max_repeats // sweeps)),
                       point_budget_s=self.point_budget_s / sweeps)


@dataclass
class BuildSettings:
    batches: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=lambda: [1])
    max_len: int = 512
    grid: list[int] | None = None
    device: str = "cpu"
    calibration_configs: int = 3
    calibration_budget_s: float = 10.0  # what the full passes' lengths may cost per round
    # the least time the calibration's interleaved rounds span: longer than the VM's speed
    # states last (seconds), so the fit and the tail see the machine, not one moment of it
    calibration_window_s: float = 20.0
    force: bool = False
    backend: str = REFERENCE  # the runtime timed (pruning.runtime); the reference: the encoder
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    seed: int = 0
