"""tp_search.search: the constrained, resumable search for a deployment configuration, and
the main job around it.

``run_search(SearchSettings(...))`` runs the whole ``tp-search --search-only`` command from
Python and returns a ``SearchResult``; ``run_pipeline`` the main job. Subpackages by concept:
``space/`` (what is searched: candidates, workload, constraint), ``scoring/`` (the proxy
metric and the trial objective), ``study/`` (the durable record, the sampler's working
study, the trial loop), ``selection/`` (choosing per machine, measuring before deploying),
``pipeline/`` (the main job's stages) and ``reports/`` (tables, Markdown, plots). Names are
imported on first use, so ``tp-search --help`` does not load torch.
"""
from __future__ import annotations

from tp_search.pruning.core.lazy import lazy_exports

_EXPORTS = {
    "Measurement": "selection.verify",
    "Check": "scoring.objective", "Checker": "scoring.objective",
    "Objective": "scoring.objective", "expected_latency": "scoring.objective",
    "fastest": "scoring.objective",
    "ProxyEvaluator": "scoring.proxy",
    "Entry": "study.record", "Record": "study.record",
    "SearchSpace": "space.candidates", "keep_key": "space.candidates",
    "MachineChoice": "result", "SearchResult": "result", "SearchSettings": "search_settings",
    "Scored": "selection.entries",
    "run_search": "run",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
