"""Which runtimes exist, by name: plain data, no torch, no runtime imported.

Every other layer asks this registry (through ``get_backend``) instead of spelling backend
names: a new runtime is one module in this package plus one ``BackendSpec`` here
(tests/test_layout.py fails on a backend name string anywhere else). The order of ``SPECS``
is the order of preference when two backends are equally good.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import TpError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    module: str  # implementation module in this package
    factory: str  # its class, built as factory(spec)
    precision: str  # fp32, bf16 or int8 (the weights' and matmuls' arithmetic)
    summary: str  # one line for --help and reports
    color: str  # plots
    requires: tuple[str, ...] = ()  # import names of the Python packages it needs
    install: str = ""  # the pip line that installs them


REFERENCE = "torch"  # what training runs and every other backend is checked against

SPECS: tuple[BackendSpec, ...] = (
    BackendSpec(REFERENCE, "torch_backend", "TorchBackend", "fp32",
                "PyTorch eager fp32, our encoder itself", "tab:gray"),
    BackendSpec("ort", "ort_backend", "OrtBackend", "fp32",
                "ONNX Runtime fp32", "tab:blue", ("onnxruntime", "onnx"),
                "pip install onnxruntime onnx onnxscript"),
    BackendSpec("ort-int8", "ort_backend", "OrtBackend", "int8",
                "ONNX Runtime, dynamic int8 weights", "tab:green", ("onnxruntime", "onnx"),
                "pip install onnxruntime onnx onnxscript"),
    BackendSpec("ov", "ov_backend", "OvBackend", "fp32",
                "OpenVINO fp32 (forced by the inference-precision hint)", "tab:purple",
                ("openvino", "onnx"), "pip install openvino"),
    BackendSpec("ov-bf16", "ov_backend", "OvBackend", "bf16",
                "OpenVINO bf16, where the CPU has native bf16 (AMX or AVX512-BF16)",
                "tab:red", ("openvino", "onnx"), "pip install openvino"),
    BackendSpec("ov-int8", "ov_backend", "OvBackend", "int8",
                "OpenVINO, NNCF post-training int8 (transformer preset)", "tab:olive",
                ("openvino", "nncf", "onnx"), "pip install openvino nncf"),
)
_BY_NAME = {s.name: s for s in SPECS}


def names() -> tuple[str, ...]:
    return tuple(s.name for s in SPECS)


def spec(name: str) -> BackendSpec:
    if name not in _BY_NAME:
        raise TpError(f"unknown backend {name!r}: use {', '.join(names())}")
    return _BY_NAME[name]


def numerics(name: str) -> str:
    """What a proxy metric computed on backend ``name`` is cached under: the fp32 backends
    share one key (their logits match the encoder's within 1e-4, tested); a quantized or
    reduced-precision one has its own, runtime included (ORT int8 is not OpenVINO int8)."""
    s = spec(name)
    return "fp32" if s.precision == "fp32" else s.name


def help_text() -> str:
    """``name (summary)`` for every backend, for a ``--backend`` flag's help."""
    return "; ".join(f"{s.name} ({s.summary})" for s in SPECS)
