"""tp_search.profiler: per-machine latency lookup tables and the latency predictor.

Names are imported on first use (PEP 562), so ``tp-profile --help`` does not load torch.
"""
from __future__ import annotations

from tp_search.profiler.fingerprint import Fingerprint, fingerprint  # noqa: F401  (light)
from tp_search.pruning.core.lazy import lazy_exports

_EXPORTS = {
    "Predictor": "predictor",
    "find_table": "store", "load_predictor": "store",
    "COMPONENTS": "table", "LatencyTable": "table", "shape_name": "table",
}
__getattr__, _lazy = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_lazy + ["Fingerprint", "fingerprint"])
