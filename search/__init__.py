"""tp-search search: the constrained, resumable search for token-pruning configurations.

``run_search(SearchSettings(...))`` runs the whole ``tp-search`` command from Python and
returns a ``SearchResult``; the pieces (space, objective, record, reports) are usable on
their own. Names are imported on first use, so ``tp-search --help`` does not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Measurement": "measure", "measure": "measure",
    "Check": "objective", "Checker": "objective", "Objective": "objective",
    "ProxyEvaluator": "objective", "expected_latency": "objective", "fastest": "objective",
    "Entry": "record", "Record": "record",
    "SearchSpace": "space", "keep_key": "space",
    "MachineChoice": "study", "SearchResult": "study", "SearchSettings": "study",
    "run_search": "study",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
