"""tp-search: hardware-aware token pruning for BERT-family encoders.

One import namespace over the three layers, whose code lives in the repository's top-level
folders (mapped by ``package-dir`` in pyproject.toml): ``tp_search.pruning`` (``pruning/``:
the encoder, training, runtimes), ``tp_search.profiler`` (``profiler/``: latency tables and
the predictor) and ``tp_search.search`` (``search/``: the search and the main job). The
names a user needs are re-exported here and imported on first use, so ``import tp_search``
does not load torch::

    import tp_search
    model = tp_search.load("runs/<run>/model")
"""
from __future__ import annotations

from tp_search.pruning.core.lazy import lazy_exports

_EXPORTS = {
    "ModelShape": "pruning.config", "PruningConfig": "pruning.config",
    "TpError": "pruning.core.errors", "InfeasibleError": "pruning.core.errors",
    "PrunedBert": "pruning.model.encoder",
    "from_pretrained": "pruning.model.checkpoint", "random_model": "pruning.model.checkpoint",
    "save": "pruning.model.checkpoint",
    "load": "pruning.runtime.deploy", "deploy": "pruning.runtime.deploy",
    "get_backend": "pruning.runtime",
    "fingerprint": "profiler.fingerprint", "load_predictor": "profiler.store",
    "Predictor": "profiler.predictor",
    "SearchSettings": "search.search_settings", "SearchResult": "search.result",
    "run_search": "search.run", "PipelineSettings": "search.pipeline.main_job",
    "run_pipeline": "search.pipeline.main_job",
    "pruning": None, "profiler": None, "search": None,
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
