"""tp_search.pruning: the core layer: the encoder that physically drops tokens, its
configuration format, MACs accounting, tasks and metrics, measuring helpers, the training
methods, the runtime backends, and what every command shares (errors, atomic files, CLI
helpers).

Subpackages by concept: ``core/`` (errors, atomic writes, CLI helpers, lazy exports),
``model/`` (encoder, keep step, checkpoints), ``data/`` (tasks, metrics), ``measure/``
(timing, fixed inputs, accuracy, memory bound), ``bench/`` (tp-bench's comparison),
``train/`` (fine-tune, distill, ToP, LTP), ``runtime/`` (backends, export, deployment).
Names are imported on first use (PEP 562), so importing the package and every ``--help``
stay free of torch.
"""
from __future__ import annotations

from tp_search.pruning.core.lazy import lazy_exports

_EXPORTS = {
    "ModelShape": "config", "PruningConfig": "config", "kept_counts": "config",
    "InfeasibleError": "core.errors", "TpError": "core.errors",
    "MacsReport": "macs", "macs_report": "macs",
    "ARCHS": "model.archs", "FAMILIES": "model.families",
    "EncoderConfig": "model.encoder", "ForwardInfo": "model.encoder",
    "PrunedBert": "model.encoder",
    "default_model_dir": "model.checkpoint", "from_pretrained": "model.checkpoint",
    "load": "runtime.deploy", "random_model": "model.checkpoint", "save": "model.checkpoint",
    "deploy": "runtime.deploy", "get_backend": "runtime",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
