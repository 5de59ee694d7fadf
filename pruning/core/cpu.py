"""What this CPU computes natively, as torch sees it (no profiler needed): bf16 matmuls run
on AMX or AVX512-BF16; elsewhere bf16 is emulated and slower than fp32."""
from __future__ import annotations

from .errors import TpError

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16() -> bool:
    import torch  # here: callers that only parse flags stay torch-free
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume not
        return False


def resolve_precision(asked: str) -> str:
    """``auto`` -> bf16 where the CPU has native bf16, else fp32."""
    if asked not in PRECISIONS:
        raise TpError(f"--train-precision {asked!r}: use {', '.join(PRECISIONS)}")
    if asked == "auto":
        return "bf16" if native_bf16() else "fp32"
    return asked
