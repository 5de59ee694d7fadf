"""tp-bench's side-by-side comparison: transformers' own class, our dense and our pruned
encoder on every backend, timed interleaved in one process."""
from tp_search.pruning.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BenchSettings": "compare",
    "default_max_len": "compare",
    "run_bench": "compare",
})
