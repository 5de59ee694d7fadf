"""What every backend provides: build a runner from a model and a pruning configuration,
run it on a batch, and describe itself for latency-table keys and reports.

tp-bench, the profiler, the search's proxy evaluation and the deployed model all go through
this interface, so a new runtime (OpenVINO, CUDA graphs) is one new module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from torch import Tensor

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import PrunedBert


class Runner(Protocol):
    """A model ready to run on one backend."""

    backend: str

    def __call__(self, batch: Mapping[str, Tensor], keep: Sequence[float] | None = None
                 ) -> Tensor:
        """Logits [B, num_labels] (CPU float32) for ``batch`` (input_ids, attention_mask,
        optionally token_type_ids). ``keep``: a top-k schedule for this call, only for
        runners built with ``keep_input=True``."""
        ...

    def describe(self) -> dict[str, Any]:
        ...


class Backend(Protocol):
    name: str  # "torch", "ort", "ort-int8"
    precision: str  # "fp32" or "int8"

    def available(self) -> str | None:
        """None when usable here, else one line saying why not."""
        ...

    def key(self, threads: int) -> dict[str, Any]:
        """What a latency table on this backend is keyed by (runtime, version, options)."""
        ...

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, cache_dir: Path | None = None) -> Runner:
        """A runner of ``model`` under ``cfg`` (None: the model's own configuration)."""
        ...
