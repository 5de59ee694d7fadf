"""Tasks and metrics: what a task is, where its text comes from, how it is batched and scored."""
from tp_search.pruning.core.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "metrics": None,
    "batches": "batching",
    "encode": "batching",
    "real_lengths": "batching",
    "SPLITS": "spec",
    "Budget": "spec",
    "Split": "spec",
    "TaskSpec": "spec",
    "ACCEPTED": "tasks",
    "load_task": "tasks",
    "task_spec": "tasks",
})
