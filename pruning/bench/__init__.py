"""Measuring a model: timing (interleaved medians), fixed inputs, dev-set accuracy, and
tp-bench"s side-by-side comparison."""
from pruning.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "BenchSettings": "compare",
    "default_max_len": "compare",
    "run_bench": "compare",
    "EvalResult": "accuracy",
    "evaluate": "accuracy",
    "fixed_inputs": "inputs",
    "Timing": "timing",
    "time_interleaved": "timing",
})
