"""The PyTorch encoder itself, eager fp32: the reference every other backend is exported
from and checked against, and what training runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import PrunedBert


class TorchRunner:
    backend = "torch"

    def __init__(self, model: PrunedBert, cfg: PruningConfig | None = None,
                 threads: int | None = None) -> None:
        self.model, self.cfg, self.threads = model.eval(), cfg or model.pruning, threads

    def __call__(self, batch: Mapping[str, Tensor], keep: Sequence[float] | None = None
                 ) -> Tensor:
        cfg = self.cfg if keep is None else PruningConfig.topk(self.model.shape, list(keep))
        return self.model(batch["input_ids"], batch.get("attention_mask"),
                          batch.get("token_type_ids"), pruning=cfg)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": "fp32",
                "runtime": f"torch {torch.__version__}",
                "threads": self.threads or torch.get_num_threads()}


class TorchBackend:
    name, precision = "torch", "fp32"

    def available(self) -> str | None:
        return None

    def key(self, threads: int) -> dict[str, Any]:
        return {"backend": self.name, "runtime": f"torch {torch.__version__.split('+')[0]}",
                "threads": threads}

    def build(self, model: PrunedBert, cfg: PruningConfig | None = None, *, threads: int = 1,
              keep_input: bool = False, cache_dir: Path | None = None) -> TorchRunner:
        return TorchRunner(model, cfg, threads)
