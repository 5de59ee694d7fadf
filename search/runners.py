"""The runtime seen from the search: a runner per backend, deployment, the deployed model.

Everything goes through ``pruning.runtime``; torch runs the PyTorch encoder itself (the
reference), other backends its ONNX export.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from torch import Tensor

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.runtime import get_backend
from tp_search.pruning.runtime.deploy import deploy as deploy_model
from tp_search.pruning.runtime.deploy import load

Runner = Callable[..., Tensor]  # runner(batch, keep=None) -> logits


def build_runner(model: PrunedBert, backend: str, cfg: PruningConfig | None = None,
                 threads: int = 1, keep_input: bool = False) -> Runner:
    return get_backend(backend).build(model, cfg, threads=threads, keep_input=keep_input)


def deploy(model: PrunedBert, cfg: PruningConfig, backend: str, path: Path, max_len: int,
           threads: int) -> Path:
    """The deployable model directory for ``backend`` (inputs truncated to ``max_len`` by
    its tokenizer; 0: the model's own limit)."""
    return deploy_model(model, cfg, backend, path, max_len=max_len, threads=threads)


def deployed_runner(path: Path) -> Runner:
    """The deployed directory as ``pruning.load`` returns it, called like a runner."""
    d = load(path)

    def run(batch: Mapping[str, Tensor], keep: Any = None) -> Tensor:
        return d(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
    return run
