"""tp-search profiler: per-machine latency lookup tables and the latency predictor."""
from .fingerprint import Fingerprint, fingerprint
from .predictor import Predictor
from .store import find_table, load_predictor
from .table import COMPONENTS, LatencyTable, shape_name

__all__ = ["COMPONENTS", "Fingerprint", "LatencyTable", "Predictor", "find_table",
           "fingerprint", "load_predictor", "shape_name"]
