"""What a search is asked for (``SearchSettings``) and where it writes by default.

Plain data: the CLI builds the settings, ``run.run_search`` returns a ``result.SearchResult``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

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
    eval_samples: int | None = None  # held-out train examples per trial (None: the budget)
    holdout: int | None = None  # held-out train examples in all (None: the task's budget)
    eval_batch: int = 32
    eval_threads: int | None = None  # torch threads for the proxy evaluation; None: threads
    seed: int = 0
    out: str | None = None
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study_name: str | None = None  # None: derived from the settings
    measure: bool = True  # measure contenders before choosing (the closed loop)
    repeats: int = 30
    margin: float = 0.05  # plan at target x (1 - margin) at least (planning.py)
    verify: int = 4  # contenders measured per round of the closed loop
    refits: int = 2  # rounds of refit-and-search-again before giving up (exit 3)
    policies: tuple[str, ...] = ("topk",)  # topk (ToP), threshold (LTP), or both
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


def default_out_dir(task: str, model: str, machines: Sequence[str], latency_ms: float,
                    min_macs_reduction: float | None = None) -> Path:
    machine = machines[0] + (f"+{len(machines) - 1}" if len(machines) > 1 else "")
    name = f"{task}-{model}-{machine}-{latency_ms:g}ms"
    if min_macs_reduction:
        name += f"-macs{min_macs_reduction:g}x"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._+-]", "_", name)
