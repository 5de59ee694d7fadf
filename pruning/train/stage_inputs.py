"""What a stage reads before it trains: its data, its starting model, sane settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tp_search.pruning.data import Split, TaskSpec, load_task, task_spec
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.checkpoint import from_pretrained
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.train_settings import TrainSettings, resolve_model_arg


@dataclass
class Data:
    spec: TaskSpec
    train: Split
    dev: Split
    max_len: int


def load_data(settings: TrainSettings) -> Data:
    spec = task_spec(settings.task)
    train, dev = load_task(settings.task, "train"), load_task(settings.task, "dev")
    if settings.holdout:  # the search's proxy slice: never trained on
        train, _ = train.holdout(settings.holdout, settings.seed)
    if settings.eval_samples:
        dev = dev.subset(settings.eval_samples, seed=0)
    return Data(spec, train, dev, settings.max_len or spec.max_len)


def load_model(path: str | None, spec: TaskSpec, what: str = "--model") -> PrunedBert:
    return from_pretrained(resolve_model_arg(path, what), num_labels=spec.num_labels)


def check_settings(s: TrainSettings) -> None:
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise TpError("--device cuda: no CUDA device visible to torch; use --device cpu")
    for name in ("epochs", "lr", "batch_size"):
        if getattr(s, name) <= 0:
            raise TpError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    if s.max_steps is not None and s.max_steps < 1:
        raise TpError(f"--max-steps must be positive, got {s.max_steps}")


def stage_out(settings: TrainSettings, stage: str) -> Path:
    if settings.out:
        return Path(settings.out)
    return Path("runs") / task_spec(settings.task).name / stage
