"""The model: the token-dropping encoder, its keep step, heads, and the checkpoint mapping
of each supported family."""
from tp_search.pruning.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ARCHS": "archs",
    "FAMILIES": "families",
    "default_model_dir": "checkpoint",
    "from_pretrained": "checkpoint",
    "load": "checkpoint",
    "random_model": "checkpoint",
    "resolve_model_dir": "checkpoint",
    "save": "checkpoint",
    "EncoderConfig": "encoder",
    "ForwardInfo": "encoder",
    "PrunedBert": "encoder",
})
