"""Synthetic latency tables for tests: MACs-proportional costs, no timing needed."""
from __future__ import annotations

import pandas as pd

from tp_search.pruning.config import ModelShape
from tp_search.pruning.runtime.registry import REFERENCE

from tp_search.profiler.fingerprint import Fingerprint
from tp_search.profiler.table import COMPONENTS, LatencyTable, default_grid


def fake_fingerprint(name: str = "test-machine", torch: str = "2.13.0") -> Fingerprint:
    return Fingerprint(cpu_brand=name, arch="x86_64", isa=("avx2",), physical_cores=2,
                       logical_cores=2, l2_cache_kb=1024, l3_cache_kb=8192, memory_gib=16,
                       device="cpu", torch=torch)


def synthetic_table(shape: ModelShape, max_len: int = 128, combos=((1, 1),),
                    ms_per_gmac: float = 1.0, fp: Fingerprint | None = None,
                    overhead_ms: float = 0.01, backend: str = REFERENCE) -> LatencyTable:
    """A table whose component costs follow the MACs formula plus a small fixed overhead."""
    d, f, H = shape.hidden_size, shape.intermediate_size, shape.num_heads
    cost = {
        "embed": lambda n: n * d * 4,
        "attn_sdpa": lambda n: 3 * n * d * d + 2 * n * n * d + H * n * n,
        "attn_probs": lambda n: 1.2 * (3 * n * d * d + 2 * n * n * d + H * n * n),
        "select": lambda n: 20 * n * d,
        "finish": lambda n: n * d * d + 2 * n * d * f,
        "head": lambda n: d * d,
    }
    rows = []
    grid = default_grid(max_len)
    for b, t in combos:
        for c in COMPONENTS:
            for n in ([1] if c == "head" else grid):
                ms = overhead_ms + b * cost[c](n) * ms_per_gmac / 1e9 / t
                rows.append(dict(batch=b, threads=t, component=c, n=n, median_ms=ms,
                                 p10_ms=ms * 0.98, p90_ms=ms * 1.03, repeats=10,
                                 other_cpu=0.0, busy=False, ref_ms=1.0, state=1.0))
    fp = fp or fake_fingerprint()
    return LatencyTable(shape, fp.to_dict(), "cpu", pd.DataFrame(rows), grid,
                        settings={"synthetic": True}, backend=backend)
