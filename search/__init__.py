"""tp-search search: the constrained, resumable search for token-pruning configurations.

``run_search(SearchSettings(...))`` runs the whole ``tp-search`` command from Python and
returns a ``SearchResult``; the pieces (space, objective, record, reports) are usable on
their own. Names are imported on first use, so ``tp-search --help`` does not load torch.
"""
from __future__ import annotations

from pruning.lazy import lazy_exports

_EXPORTS = {
    "Measurement": "measure",
    "Check": "objective", "Checker": "objective", "Objective": "objective",
    "ProxyEvaluator": "objective", "expected_latency": "objective", "fastest": "objective",
    "Entry": "record", "Record": "record",
    "SearchSpace": "space", "keep_key": "space",
    "MachineChoice": "settings", "SearchResult": "settings", "SearchSettings": "settings",
    "run_search": "run",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
