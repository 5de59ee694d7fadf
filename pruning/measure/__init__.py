"""Measuring a model, for every layer above: wall-clock timing (interleaved medians), the
fixed inputs every compared runner gets, dev-set accuracy of any runner, and the memory
bound checked before a forward pass."""
from tp_search.pruning.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "EvalResult": "accuracy",
    "evaluate": "accuracy",
    "evaluate_runner": "accuracy",
    "fixed_inputs": "timed_inputs",
    "check_fits": "memory",
    "Timing": "timing",
    "time_interleaved": "timing",
})
