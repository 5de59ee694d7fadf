"""OpenVINO backends: ``ov`` (fp32), ``ov-bf16`` and ``ov-int8``, all compiled from the
same ONNX export as ONNX Runtime runs (``Core.read_model`` reads it, TopK with a
data-dependent K included), the keep-input graph too.

- ``ov``: fp32, forced with ``INFERENCE_PRECISION_HINT=f32``: on a CPU with native bf16 the
  CPU plugin's default is bf16, so an unforced "fp32" OpenVINO figure is really bf16.
- ``ov-bf16``: the bf16 hint; available only where the CPU has native bf16 (AMX or
  AVX512-BF16, which OpenVINO lists as the BF16 optimisation capability): elsewhere OpenVINO
  would emulate it, slower than fp32.
- ``ov-int8``: NNCF post-training quantization (``nncf.quantize``, transformer model type:
  int8 MatMuls with fake-quantized activations, SmoothQuant and bias correction), calibrated
  on the task's *train* examples when the caller passes them, random inputs for latency
  tables; the rest of the graph runs in fp32 (the f32 hint), so this lever is int8 alone.

One thread means ``INFERENCE_NUM_THREADS=1``, one stream and the latency hint. The precision
actually compiled is read back from the compiled model and recorded in table keys, runner
descriptions and deployment.json.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import openvino as ov
import torch
from torch import Tensor

from ..config import PruningConfig
from ..model.encoder import PrunedBert
from .base import Backend, Feeds, TimerFactory
from .export import ONNX_FILE, cache_dir, exported, input_names, numpy_feed, sha256
from .onnx_components import ComponentTimers, component_graphs, sample_feeds

log = logging.getLogger("tp.runtime")

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT
IR_FILE = "model.xml"  # ov-int8's deployed graph (weights in model.bin beside it)
QUANTIZATION = ("NNCF post-training int8 (transformer model type: int8 MatMuls, "
                "SmoothQuant, fast bias correction); other ops in fp32")


@functools.lru_cache(maxsize=1)
def core() -> ov.Core:
    return ov.Core()


def capabilities() -> list[str]:
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def native_bf16() -> bool:
    """OpenVINO's BF16 capability: AMX or AVX512-BF16 on x86."""
    return "BF16" in capabilities()


def compiled_precision(compiled: Any) -> str:
    return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


class OvRunner:
    def __init__(self, path: Path, backend: str, precision: str, config: dict[str, Any],
                 names: Sequence[str], threads: int) -> None:
        self.path, self.backend, self.precision = Path(path), backend, precision
        self.names, self.threads = list(names), threads
        self.compiled = core().compile_model(str(self.path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.compiled_as = compiled_precision(self.compiled)

    def __call__(self, batch: Mapping[str, Tensor], keep: Sequence[float] | None = None
                 ) -> Tensor:
        self.request.infer(numpy_feed(self.names, batch, keep))
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision,
                "runtime": f"openvino {ov.get_version()}", "threads": self.threads,
                "compiled_precision": self.compiled_as, "file": self.path.name,
                **({"quantization": QUANTIZATION} if self.precision == "int8" else {})}


class OvBackend(Backend):
    exported = True

    @property
    def calibrated(self) -> bool:  # type: ignore[override]
        return self.precision == "int8"

    def unavailable(self) -> str | None:
        if self.precision == "bf16" and not native_bf16():
            return ("this CPU has no native bf16 (no AMX, no AVX512-BF16; OpenVINO lists "
                    f"{', '.join(capabilities())}): bf16 would be emulated")
        return None

    def description(self) -> str:
        caps = capabilities()
        hw = ("AMX" if "amx" in " ".join(c.lower() for c in caps) else
              "AVX512-BF16 / AMX" if "BF16" in caps else "no native bf16")
        if self.precision == "bf16":
            return f"OpenVINO bf16 ({hw}; CPU capabilities {', '.join(caps)})"
        if self.precision == "int8":
            return f"OpenVINO int8 ({QUANTIZATION})"
        return "OpenVINO fp32 (inference-precision hint f32)"

    def config(self, threads: int) -> dict[str, Any]:
        return {"INFERENCE_PRECISION_HINT": HINTS[self.precision],
                "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY"}

    def key(self, threads: int) -> dict[str, Any]:
        k = {"backend": self.name, "runtime": f"openvino {ov.get_version()}",
             "openvino": ov.get_version().split("-")[0], "threads": threads,
             **{c.lower(): v for c, v in self.config(threads).items()
                if c != "INFERENCE_NUM_THREADS"},
             "cpu_capabilities": capabilities()}
        return k | ({"quantization": QUANTIZATION} if self.precision == "int8" else {})

    def file(self, model: PrunedBert, cfg: PruningConfig | None = None,
             keep_input: bool = False, calibration: Feeds | None = None,
             cache_dir_: Path | None = None, schedule: str = "topk") -> Path:
        """The (cached) file this backend compiles: the fp32 ONNX export, or for int8 its
        NNCF-quantized OpenVINO IR (keyed by the calibration data too)."""
        path = exported(model, cfg, keep_input, cache_dir_, schedule)
        if self.precision != "int8":
            return path
        names = input_names(model, keep_input, schedule)
        dense = (([1.0] if schedule == "topk" else [0.0]) * model.shape.num_layers
                 if keep_input else None)
        feeds = ([numpy_feed(names, b, dense) for b in calibration] if calibration
                 else sample_feeds(path))
        return quantized_ir(path, feeds, cache_dir_)

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, calibration: Feeds | None = None,
              cache_dir: Path | None = None, schedule: str = "topk") -> OvRunner:
        path = self.file(model, cfg, keep_input, calibration, cache_dir, schedule)
        return OvRunner(path, self.name, self.precision, self.config(threads),
                        input_names(model, keep_input, schedule), threads)

    def write_artefact(self, model: PrunedBert, cfg: PruningConfig, directory: Path,
                       threads: int, calibration: Feeds | None = None) -> dict[str, Any]:
        src = self.file(model, cfg, calibration=calibration)
        if self.precision == "int8":  # the quantized IR; the fp32 graph for other stacks
            shutil.copyfile(src, directory / IR_FILE)
            shutil.copyfile(src.with_suffix(".bin"), directory / "model.bin")
            shutil.copyfile(exported(model, cfg), directory / ONNX_FILE)
            main = {"file": IR_FILE, "sha256": sha256(directory / IR_FILE),
                    "weights_sha256": sha256(directory / "model.bin")}
        else:  # OpenVINO compiles the ONNX file itself, with the precision hint
            shutil.copyfile(src, directory / ONNX_FILE)
            main = {"file": ONNX_FILE, "sha256": sha256(directory / ONNX_FILE)}
        compiled = core().compile_model(str(directory / main["file"]), "CPU",
                                        self.config(threads))
        return {"openvino": main, "onnx": {"file": ONNX_FILE,
                                           "sha256": sha256(directory / ONNX_FILE)},
                "compile_config": self.config(threads),
                "compiled_precision": compiled_precision(compiled)}

    def load_artefact(self, directory: Path, info: Mapping[str, Any],
                      reference: PrunedBert) -> OvRunner:
        from .deploy import checked_file
        path = checked_file(directory, info, "openvino")
        threads = int(info.get("threads", 1))
        return OvRunner(path, self.name, self.precision, self.config(threads),
                        input_names(reference, False), threads)

    def component_timers(self, model: PrunedBert, threads: int) -> TimerFactory:
        calls = {}
        for kind, path in component_graphs(model).items():
            if self.precision == "int8":
                path = quantized_ir(path, sample_feeds(path))
            compiled = core().compile_model(str(path), "CPU", self.config(threads))
            req = compiled.create_infer_request()
            calls[kind] = (lambda feed, req=req: req.infer(feed))
        return ComponentTimers(model, calls).at


def quantized_ir(fp32: Path, feeds: list[dict[str, np.ndarray]],
                 cache: Path | None = None) -> Path:
    """NNCF int8 of an fp32 ONNX file, saved as OpenVINO IR beside the exports."""
    import nncf  # here: only int8 needs it (and it is slow to import)
    h = hashlib.sha1(fp32.name.encode())
    for f in feeds:
        for k in sorted(f):
            h.update(k.encode())
            h.update(np.ascontiguousarray(f[k]).tobytes())
    h.update(nncf.__version__.encode())
    out = cache_dir(cache) / f"{fp32.stem}-ov-int8-{h.hexdigest()[:10]}.xml"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file() and out.with_suffix(".bin").is_file():
        return out
    log.info("quantizing %s to int8 with NNCF (%d calibration batches)", fp32.name, len(feeds))
    model = core().read_model(str(fp32))
    with _quiet_nncf():
        q = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                          subset_size=len(feeds))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp"))
    try:  # the weights first, the graph last: an .xml on disk always has its .bin
        ov.save_model(q, str(tmp / out.name), compress_to_fp16=False)
        os.replace(tmp / out.with_suffix(".bin").name, out.with_suffix(".bin"))
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def _quiet_nncf() -> Any:
    """NNCF draws progress bars on stdout and logs each algorithm: tp-search's stdout is
    data, and none of it concerns a user."""
    lg = logging.getLogger("nncf")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        lg.setLevel(level)
