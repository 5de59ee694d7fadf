"""The main job's stage log: each stage timed, logged, and recorded in ``stages.json`` as it
finishes (ran, reused or skipped), so an interrupted run still says how far it got."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from tp_search.pruning.core.atomic import atomic_write_text

log = logging.getLogger("tp.pipeline")


@dataclass
class StageRecord:
    name: str
    seconds: float
    status: str  # ran / reused / skipped
    output: str = ""


class Stages:
    """Times each stage, logs it, and keeps ``stages.json`` current in the run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.records = run_dir, []

    def run(self, name: str, fn: Callable[[], Any], reused: Callable[[], bool] = lambda: False
            ) -> Any:
        was_done = reused()
        log.info("== stage %s%s", name, " (reusing finished output)" if was_done else "")
        t0 = time.perf_counter()
        out = fn()
        rec = StageRecord(name, round(time.perf_counter() - t0, 1),
                          "reused" if was_done else "ran",
                          str(out) if isinstance(out, (str, Path)) else "")
        self.records.append(rec)
        log.info("== stage %s: %s in %.1f s", name, rec.status, rec.seconds)
        self.save()
        return out

    def skip(self, name: str, why: str) -> None:
        self.records.append(StageRecord(name, 0.0, "skipped", why))
        log.info("== stage %s: skipped (%s)", name, why)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.run_dir / "stages.json",
                          json.dumps([asdict(r) for r in self.records], indent=2) + "\n")

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]
