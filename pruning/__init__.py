"""tp-search pruning: an encoder that physically drops tokens, its configuration format,
MACs accounting, and (later) the training methods."""
from .checkpoint import ARCHS, default_model_dir, from_pretrained, load, random_model, save
from .config import ModelShape, PruningConfig, kept_counts
from .encoder import EncoderConfig, ForwardInfo, PrunedBert
from .errors import InfeasibleError, TpError
from .macs import MacsReport, macs_report

__all__ = ["ARCHS", "EncoderConfig", "ForwardInfo", "InfeasibleError", "MacsReport",
           "ModelShape", "PrunedBert", "PruningConfig", "TpError", "default_model_dir",
           "from_pretrained", "kept_counts", "load", "macs_report", "random_model", "save"]
