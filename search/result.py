"""What a search returns: one ``MachineChoice`` per deployment machine inside a
``SearchResult``. Plain data, filled by ``run.run_search`` and rendered by ``reports/``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.runtime.registry import REFERENCE
from tp_search.search.search_settings import SearchSettings
from tp_search.search.space.candidates import Candidate, SearchSpace
from tp_search.search.space.workload import Workload

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.selection.closed_loop import LoopRound
    from tp_search.search.selection.entries import Scored
    from tp_search.search.selection.verify import Measurement


@dataclass
class MachineChoice:
    """The configuration chosen for one deployment machine."""

    machine_id: str
    dense_ms: float  # predicted at the workload: dense, full length, on the chosen backend
    fastest_ms: float  # fastest candidate of the space, predicted
    config: PruningConfig
    latency_ms: float  # predicted at the workload
    metric: float | None
    macs: dict[str, float]  # workload / padded / real reductions
    trial: int | None = None
    expected_ms: float | None = None  # mean predicted latency over dev real lengths
    dense_expected_ms: float | None = None
    measurement: Measurement | None = None
    measure_note: str = ""
    backend: str = REFERENCE
    max_len: int = 0  # truncation; 0: none beyond the workload's length
    reference_ms: float | None = None  # predicted: dense torch fp32 at full length
    limit_ms: float | None = None  # what the plan allowed the prediction on this backend
    plan: dict[str, Any] = field(default_factory=dict)  # planning.Plan of the backend
    rescored: dict[str, Any] | None = None  # on the whole held-out slice, vs the teacher
    rounds: list[LoopRound] = field(default_factory=list)  # the closed loop, this machine

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.backend, self.max_len, self.config)

    def to_dict(self) -> dict[str, Any]:
        return {"machine_id": self.machine_id, "backend": self.backend,
                "max_len": self.max_len, "config": self.config.to_dict(),
                "reference_ms": self.reference_ms,
                "trial": self.trial, "predicted_ms": self.latency_ms,
                "expected_ms_dev": self.expected_ms, "dense_ms": self.dense_ms,
                "dense_expected_ms_dev": self.dense_expected_ms,
                "fastest_ms": self.fastest_ms, "metric": self.metric,
                "macs_reduction": self.macs,
                "measured": None if self.measurement is None else self.measurement.to_dict(),
                "measurement_note": self.measure_note, "limit_ms": self.limit_ms,
                "plan": self.plan, "rescored": self.rescored,
                "closed_loop": [r.to_dict() for r in self.rounds]}


@dataclass
class SearchResult:
    # "searched"; "dense" (the dense model met the target: no search); "missed" (no
    # contender measured within the target after every refit)
    status: str
    settings: SearchSettings
    out_dir: Path
    task: str
    model: str
    proxy_model: str
    metric_name: str
    dense_metric: float
    seq_len: int
    n_eval: int
    mean_length: float
    space: SearchSpace
    workload: Workload
    choices: list[MachineChoice]
    here_id: str | None
    results_dir: str
    study_name: str | None = None
    storage: str | None = None
    entries: list[Scored] = field(default_factory=list)  # every finished trial
    proxy: dict[str, Any] = field(default_factory=dict)  # the held-out slice it used
    lengths: list[int] = field(default_factory=list)  # the dev subset's real lengths
    # expected latency over those lengths of an entry on a machine (not serialised)
    expected: Callable[[str, Scored], float | None] | None = field(default=None, repr=False)
    stats: dict[str, int] = field(default_factory=dict)
    sampler_seeds: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)  # single-lever points

    @property
    def target_ms(self) -> float:
        return self.settings.latency_ms

    @property
    def machine_ids(self) -> list[str]:
        return [c.machine_id for c in self.choices]

    @property
    def primary(self) -> MachineChoice:
        return self.choices[0]

    def workload_info(self) -> dict[str, Any]:
        """The workload as reports state it: what it is, plus threads, device, dev subset."""
        s = self.settings
        return {**self.workload.to_dict(), "threads": s.threads, "device": s.device,
                "dev_mean_length": self.mean_length, "dev_examples": self.n_eval}

    def workload_text(self, short: bool = False) -> str:
        s = self.settings
        if short:
            return f"{self.workload.describe(short=True)}, {s.threads} thread(s)"
        return f"{self.workload.describe()}, {s.threads} thread(s), {s.device}"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "task": self.task, "model": self.model,
                "proxy_model": self.proxy_model, "metric": self.metric_name,
                "dense_metric": self.dense_metric, "target_ms": self.target_ms,
                "min_macs_reduction": self.settings.min_macs_reduction,
                "workload": self.workload_info(),
                "machines": [c.to_dict() for c in self.choices],
                "this_machine": self.here_id, "study": self.study_name,
                "storage": self.storage, "stats": self.stats,
                "seeds": {"seed": self.settings.seed, "sampler_seeds": self.sampler_seeds},
                "space": self.space.to_dict(), "settings": self.settings.to_dict(),
                "references": self.references, "proxy": self.proxy,
                "out_dir": str(self.out_dir)}


