"""What a search is asked for (``SearchSettings``) and what it returns (``SearchResult``).

Plain data: the CLI builds the settings, ``run.run_search`` fills the result, ``report``
renders it.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.runtime.registry import REFERENCE

from tp_search.search.space.candidates import Candidate, SearchSpace
from tp_search.search.space.workload import Workload

if TYPE_CHECKING:  # pragma: no cover
    from tp_search.search.selection.verify import Measurement
from tp_search.search.study.storage import redact

# Truncation levels the search tries by default, as fractions of the workload's length.
TRUNCATION = (1.0, 0.75, 0.5, 0.375, 0.25)


@dataclass
class SearchSettings:
    latency_ms: float
    task: str = "bbc_news"
    model: str | None = None  # None: the bundled all-MiniLM-L6-v2
    proxy_model: str | None = None  # None: same as model
    dense_model: str | None = None  # scores and serves candidates that prune nothing
    machines: tuple[str, ...] = ()  # () = this machine
    results: str | None = None  # latency tables root (default: results/)
    seq_len: int | None = None  # None: the task's max length (capped by the model)
    workload: str = "max"  # "max": one input of seq_len tokens; "dev": the real dev inputs
    percentile: float = 90.0  # the target holds for this percentile of latency
    backends: tuple[str, ...] = ()  # runtimes to search over; () = every one with a table
    truncation: tuple[int, ...] | None = None  # max lengths to try; None: TRUNCATION x seq_len
    batch: int = 1
    threads: int = 1
    device: str = "cpu"
    min_macs_reduction: float | None = None  # --macs-reduction
    trials: int = 100
    population: int = 20
    eval_samples: int | None = None  # None: the task's budget (300)
    eval_batch: int = 32
    eval_threads: int | None = None  # torch threads for the proxy evaluation; None: threads
    seed: int = 0
    out: str | None = None
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study_name: str | None = None  # None: derived from the settings
    measure: bool = True
    repeats: int = 30
    layers: tuple[int, ...] = ()  # candidate pruning layers; () = all but the first
    min_ratio: float = 0.2
    max_ratio: float = 0.95
    floor: float = 0.02
    progress: bool = True
    always_search: bool = False  # search even when the dense fp32 model meets the target

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["machines"], d["layers"] = list(self.machines), list(self.layers)
        d["backends"] = list(self.backends)
        d["truncation"] = None if self.truncation is None else list(self.truncation)
        if self.storage:
            d["storage"] = redact(self.storage)
        return d


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
                "measurement_note": self.measure_note}


@dataclass
class SearchResult:
    status: str  # "searched" or "dense" (the dense model met the target; no search)
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
    trials: pd.DataFrame | None = None
    pareto: pd.DataFrame | None = None
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
                "references": self.references,
                "out_dir": str(self.out_dir)}


def default_out_dir(task: str, model: str, machines: Sequence[str], latency_ms: float,
                    min_macs_reduction: float | None = None) -> Path:
    machine = machines[0] + (f"+{len(machines) - 1}" if len(machines) > 1 else "")
    name = f"{task}-{model}-{machine}-{latency_ms:g}ms"
    if min_macs_reduction:
        name += f"-macs{min_macs_reduction:g}x"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._+-]", "_", name)
