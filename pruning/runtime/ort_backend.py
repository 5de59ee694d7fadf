"""ONNX Runtime backends: fp32 (``ort``) and dynamic int8 weights (``ort-int8``).

int8 is ``onnxruntime.quantization.quantize_dynamic`` of the MatMuls with signed int8 weights
per output channel (unsigned activations, quantized per call): on an AVX-512 VNNI CPU QInt8 is
the fast combination (MiniLM at 128 tokens, 1 thread: 0.47x of fp32's time vs 0.75x for
QUInt8), and per-channel scales halve the logit error of per-tensor ones at the same speed
(results/amd-epyc-f25m17-2c-avx512-0e0bb5/runtime/findings.md). MLAS runs these U8S8 GEMMs
on AMX where the CPU has it. int8 changes numerics: its accuracy is measured, never assumed.

Sessions run every graph optimisation except SkipLayerNormFusion (residual add + LayerNorm
into one contrib kernel), measured 6-17% slower than the unfused ops on an AMD EPYC.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import Tensor

from ..config import PruningConfig
from ..core.atomic import atomic_path
from ..model.encoder import PrunedBert
from .base import Backend, Feeds, TimerFactory
from .export import ONNX_FILE, cache_dir, exported, input_names, numpy_feed, sha256
from .onnx_components import ComponentTimers, component_graphs

log = logging.getLogger("tp.runtime")

OPT_LEVEL = "all"
DISABLED = ("SkipLayerNormFusion",)  # slower here than Add + LayerNormalization (above)
_LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
           "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
QUANTIZATION = ("dynamic, MatMul only: int8 weights (QInt8) per channel, uint8 activations "
                "quantized per call")


def session(path: Path, threads: int, level: str = OPT_LEVEL) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _LEVELS[level]
    so.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED))


def quantized(fp32: Path, cache: Path | None = None) -> Path:
    """The dynamic-int8 version of an exported fp32 file (cached beside the exports)."""
    out = cache_dir(cache) / f"{fp32.stem}-int8c.onnx"  # c: per channel
    if not out.is_file():
        log.info("quantizing %s to dynamic int8", fp32.name)
        with atomic_path(out) as tmp, _quiet_root():
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
    return out


@contextlib.contextmanager
def _quiet_root() -> Any:
    """quantize_dynamic warns on the root logger that pre-processing may help: measured,
    it does not change speed here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class OrtRunner:
    def __init__(self, path: Path, backend: str, precision: str, names: Sequence[str],
                 threads: int) -> None:
        self.path, self.backend, self.precision = Path(path), backend, precision
        self.names, self.threads = list(names), threads
        self.session = session(self.path, threads)

    def __call__(self, batch: Mapping[str, Tensor], keep: Sequence[float] | None = None
                 ) -> Tensor:
        return torch.from_numpy(self.session.run(None, numpy_feed(self.names, batch, keep))[0])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision,
                "runtime": f"onnxruntime {ort.__version__}", "threads": self.threads,
                "graph_optimization": OPT_LEVEL, "file": self.path.name,
                **({"quantization": QUANTIZATION} if self.precision == "int8" else {})}


class OrtBackend(Backend):
    exported = True

    def description(self) -> str:
        if self.precision != "int8":
            return "ONNX Runtime fp32 (MLAS)"
        return f"ONNX Runtime int8 ({QUANTIZATION})"

    def key(self, threads: int) -> dict[str, Any]:
        k = {"backend": self.name, "runtime": f"onnxruntime {ort.__version__}",
             "onnxruntime": ort.__version__, "threads": threads, "inter_op_threads": 1,
             "graph_optimization": OPT_LEVEL, "disabled_optimizers": list(DISABLED)}
        return k | ({"quantization": QUANTIZATION} if self.precision == "int8" else {})

    def file(self, model: PrunedBert, cfg: PruningConfig | None = None,
             keep_input: bool = False, cache_dir: Path | None = None,
             schedule: str = "topk") -> Path:
        """The (cached) ONNX file this backend runs for ``model`` under ``cfg``."""
        path = exported(model, cfg, keep_input, cache_dir, schedule)
        return quantized(path, cache_dir) if self.precision == "int8" else path

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, calibration: Feeds | None = None,
              cache_dir: Path | None = None, schedule: str = "topk") -> OrtRunner:
        path = self.file(model, cfg, keep_input, cache_dir, schedule)
        return OrtRunner(path, self.name, self.precision,
                         input_names(model, keep_input, schedule), threads)

    def write_artefact(self, model: PrunedBert, cfg: PruningConfig, directory: Path,
                       threads: int, calibration: Feeds | None = None) -> dict[str, Any]:
        shutil.copyfile(self.file(model, cfg), directory / ONNX_FILE)
        return {"onnx": {"file": ONNX_FILE, "sha256": sha256(directory / ONNX_FILE)},
                "session": self.key(threads)}

    def load_artefact(self, directory: Path, info: Mapping[str, Any],
                      reference: PrunedBert) -> OrtRunner:
        from .deploy import checked_file  # the manifest's checks live with the manifest
        return OrtRunner(checked_file(directory, info, "onnx"), self.name, self.precision,
                         input_names(reference, False), int(info.get("threads", 1)))

    def component_timers(self, model: PrunedBert, threads: int) -> TimerFactory:
        graphs = component_graphs(model)
        calls = {}
        for kind, path in graphs.items():
            s = session(quantized(path) if self.precision == "int8" else path, threads)
            calls[kind] = (lambda feed, s=s: s.run(None, feed))
        return ComponentTimers(model, calls).at


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
