"""tp-search search: the constrained, resumable search for token-pruning configurations.

``run_search(SearchSettings(...))`` runs the whole ``tp-search`` command from Python and
returns a ``SearchResult``; the pieces (space, objective, study loop, reports) are usable
on their own.
"""
from .measure import Measurement, measure
from .objective import Check, Checker, Objective, ProxyEvaluator, expected_latency, fastest
from .space import SearchSpace, keep_key
from .record import Entry, Record
from .study import MachineChoice, SearchResult, SearchSettings, run_search

__all__ = ["Check", "Checker", "Entry", "MachineChoice", "Measurement", "Objective",
           "ProxyEvaluator", "Record", "SearchResult", "SearchSettings", "SearchSpace",
           "expected_latency", "fastest", "keep_key", "measure", "run_search"]
