"""Stage 1: fine-tune the dense model on the task; the result is the teacher of later stages."""
from __future__ import annotations

import logging
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.stage_inputs import Data, load_model
from tp_search.pruning.train.latency import LatencyModel
from tp_search.pruning.train.trainer import run_stage
from tp_search.pruning.train.train_settings import FinetuneSettings
from tp_search.pruning.train.stage import Stage, StepResult

log = logging.getLogger("tp.train")


class FinetuneStage(Stage):
    name = "finetune"

    def __init__(self, model: PrunedBert, regression: bool) -> None:
        self.model, self.regression = model, regression

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        logits = self.model(batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"])
        if self.regression:
            loss = F.mse_loss(logits[:, 0], batch["labels"])
        else:
            loss = F.cross_entropy(logits, batch["labels"])
        return StepResult(loss, logits)


def finetune(settings: FinetuneSettings, latency: LatencyModel | None = None) -> Path:
    """Fine-tune ``settings.model`` (default: all-MiniLM-L6-v2, fresh head) on the task;
    ``latency`` only adds predicted latency to metrics.json."""
    def make(data: Data) -> Stage:
        return FinetuneStage(load_model(settings.model, data.spec), data.spec.is_regression)
    return run_stage(make, settings, "finetune", latency=latency)
