"""The contract every backend implements, so that search, profiler, tp-bench, benchmarks and
the deployed model never need to know which runtime they talk to.

A backend says what it is (name, precision, the numerics its metrics are cached under, a
description naming the hardware it uses), whether it runs on this CPU (and why not), what
its latency tables are keyed by, how to build a runner of a model and a pruning
configuration, how to write and read its deployed artefact, and how the profiler times
its pieces (``component_timers``) and whole passes (``full_pass``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from torch import Tensor

from ..config import PruningConfig
from ..model.encoder import PrunedBert
from .registry import BackendSpec, numerics

Feeds = Sequence[Mapping[str, Tensor]]  # example batches (input_ids, attention_mask, ...)


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


class PassTimer(Protocol):
    """Times a backend's pieces at one (batch, n) grid point, the way the profiler's table
    needs them: ms per layer of each component (see profiler/table.py)."""

    def warm(self) -> None: ...

    def plain_pass(self) -> dict[str, float]: ...  # embed, attn_sdpa, finish, head

    def pruning_pass(self) -> dict[str, float]: ...  # attn_probs, select, finish_half


TimerFactory = Callable[[int, int], PassTimer]  # (batch, n) -> timer
FullPass = Callable[[PruningConfig, Tensor], Callable[[], Any]]  # (cfg, input_ids) -> call


class Backend:
    """Base of every backend; subclasses override what differs."""

    exported = False  # runs the ONNX export (a graph per configuration, >= 2 tokens)
    calibrated = False  # quantizes statically: build() wants calibration batches

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name, self.precision = spec.name, spec.precision

    @property
    def numerics(self) -> str:
        """The key its proxy metrics are cached under (``registry.numerics``)."""
        return numerics(self.name)

    def unavailable(self) -> str | None:
        """None when usable on this machine, else one line saying why not."""
        return None

    def description(self) -> str:
        """One line for reports: runtime, precision, and the CPU feature it relies on."""
        return self.spec.summary

    def key(self, threads: int) -> dict[str, Any]:
        """What a latency table on this backend is keyed by (runtime, version, options)."""
        raise NotImplementedError

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, calibration: Feeds | None = None,
              cache_dir: Path | None = None, schedule: str = "topk") -> Runner:
        """A runner of ``model`` under ``cfg`` (None: the model's own configuration).
        ``keep_input``: the schedule is an input of each call (``runner(batch, keep=...)``:
        keep fractions, or thresholds with ``schedule="threshold"``). ``calibration``: real
        example batches, for backends that quantize statically."""
        raise NotImplementedError

    def write_artefact(self, model: PrunedBert, cfg: PruningConfig, directory: Path,
                       threads: int, calibration: Feeds | None = None) -> dict[str, Any]:
        """Write what this backend runs into a deployed model directory (beside the
        PyTorch weights); returns what deployment.json records about it."""
        return {}

    def load_artefact(self, directory: Path, info: Mapping[str, Any],
                      reference: PrunedBert) -> Runner:
        """The runner of a deployed directory (``info``: its deployment.json)."""
        return self.build(reference, reference.pruning, threads=int(info.get("threads", 1)))

    def component_timers(self, model: PrunedBert, threads: int) -> TimerFactory:
        """The profiler's timers of this backend's pieces, one per grid point."""
        raise NotImplementedError

    def full_pass(self, model: PrunedBert, threads: int) -> FullPass:
        """Whole-model passes (calibration, validation): the runner of each configuration,
        called on one batch of ids with every token real."""
        def make(cfg: PruningConfig, ids: Tensor) -> Callable[[], Any]:
            runner = self.build(model, cfg, threads=threads)
            feed = {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape)}
            return lambda: runner(feed)
        return make
