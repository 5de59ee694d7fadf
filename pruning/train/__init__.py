"""Training stages of tp-search: fine-tune -> ranking distillation -> ToP or LTP pruning.

Each stage function takes a settings dataclass (``train_settings.py``, torch-free) and returns its
output directory, which holds ``model/`` (a model directory the encoder, tp-bench and the
next stage load) and ``metrics.json``. Stages resume from their checkpoint and are skipped
once finished. A stage constrained by latency takes a ``LatencyModel`` from its caller.
"""
from tp_search.pruning.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "DistillSettings": "train_settings", "FinetuneSettings": "train_settings", "LtpSettings": "train_settings",
    "TopSettings": "train_settings", "TrainSettings": "train_settings", "LatencyModel": "latency",
    "distill": "distillation", "finetune": "finetuning", "prune_ltp": "ltp", "prune_top": "top",
})
