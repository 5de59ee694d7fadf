"""A sanity bound before a forward pass: does batch x length fit in this machine's memory?

Without it, ``tp-bench --batch 100000`` swaps or runs for minutes before failing; with it,
the command refuses at once and says which flag to lower.
"""
from __future__ import annotations

import psutil

from tp_search.pruning.config import ModelShape
from tp_search.pruning.core.errors import TpError


def forward_peak_bytes(shape: ModelShape, batch: int, n: int, dtype_bytes: int = 4) -> int:
    """Live activations at the peak of one inference layer: hidden states and residual,
    fused QKV, context, the FFN intermediate and its activation, attention scores and
    probabilities (the N^2 term)."""
    d, f, H = shape.hidden_size, shape.intermediate_size, shape.num_heads
    per_token = 2 * d + 3 * d + d + 2 * f
    return dtype_bytes * batch * (n * per_token + 2 * H * n * n)


def check_fits(shape: ModelShape, batch: int, n: int, flags: str = "--batch or --seq-len",
               share: float = 0.5) -> None:
    """Refuse a workload whose one forward pass needs more than ``share`` of the memory
    available now (several runners and the weights share the rest)."""
    need = forward_peak_bytes(shape, batch, n)
    avail = psutil.virtual_memory().available
    if need > share * avail:
        raise TpError(f"batch {batch} x {n} tokens needs about {need / 2**30:.1f} GiB of "
                      f"activations per forward pass, more than {share:.0%} of the "
                      f"{avail / 2**30:.1f} GiB available; lower {flags}")
