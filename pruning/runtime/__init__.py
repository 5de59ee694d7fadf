"""Backends a pruned encoder runs on: torch (eager fp32, the reference), ort (ONNX Runtime
fp32) and ort-int8 (ONNX Runtime, dynamic int8 weights); export, deployment, loading.

    runner = get_backend("ort-int8").build(model, cfg, threads=1)
    logits = runner(batch)
"""
from __future__ import annotations

from tp_search.pruning.core.errors import TpError
from tp_search.pruning.runtime.base import Backend, Runner

BACKENDS = ("torch", "ort", "ort-int8")


def get_backend(name: str) -> Backend:
    if name == "torch":
        from tp_search.pruning.runtime.torch_backend import TorchBackend  # here: onnxruntime loads only when used
        return TorchBackend()
    if name in ("ort", "ort-int8"):
        try:
            from tp_search.pruning.runtime.ort_backend import OrtBackend  # here: a missing onnxruntime is one error
        except ImportError as e:
            raise TpError(f"backend {name}: onnxruntime is not installed ({e}); pip install "
                          "onnxruntime onnx onnxscript, or use --backend torch") from None
        return OrtBackend(name, "int8" if name == "ort-int8" else "fp32")
    raise TpError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}")


def available_backends() -> list[str]:
    out = []
    for b in BACKENDS:
        try:
            if get_backend(b).available() is None:
                out.append(b)
        except TpError:
            pass
    return out


__all__ = ["BACKENDS", "Backend", "Runner", "available_backends", "get_backend"]
