"""tp-search pruning: the encoder that physically drops tokens, its configuration format,
MACs accounting, tasks and metrics, measurement, and the training methods.

Subpackages by concept: ``model/`` (encoder, keep step, checkpoints), ``data/`` (tasks,
metrics), ``bench/`` (timing, accuracy), ``train/`` (fine-tune, distill, ToP, LTP).
Names are imported on first use (PEP 562), so ``import pruning`` and every ``--help`` stay
free of torch.
"""
from __future__ import annotations

from pruning.lazy import lazy_exports

_EXPORTS = {
    "ModelShape": "config", "PruningConfig": "config", "kept_counts": "config",
    "InfeasibleError": "errors", "TpError": "errors",
    "MacsReport": "macs", "macs_report": "macs",
    "ARCHS": "model.archs", "FAMILIES": "model.families",
    "EncoderConfig": "model.encoder", "ForwardInfo": "model.encoder",
    "PrunedBert": "model.encoder",
    "default_model_dir": "model.checkpoint", "from_pretrained": "model.checkpoint",
    "load": "runtime.deploy", "random_model": "model.checkpoint", "save": "model.checkpoint",
    "deploy": "runtime.deploy", "get_backend": "runtime",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
