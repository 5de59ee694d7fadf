"""Training stages of tp-search: fine-tune -> ranking distillation -> ToP or LTP pruning.

Each stage function takes a settings dataclass and returns its output directory, which
holds ``model/`` (a model directory the encoder, tp-bench and the next stage load) and
``metrics.json``. Stages resume from their checkpoint and are skipped once finished.
"""
from .distill import DistillSettings, distill
from .finetune import FinetuneSettings, finetune
from .loop import TrainSettings
from .ltp import LtpSettings, prune_ltp
from .top import TopSettings, prune_top

__all__ = ["DistillSettings", "FinetuneSettings", "LtpSettings", "TopSettings",
           "TrainSettings", "distill", "finetune", "prune_ltp", "prune_top"]
