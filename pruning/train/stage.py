"""What a training method implements (``Stage``) and what one of its steps returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.model.encoder import PrunedBert


@dataclass
class StepResult:
    loss: Tensor
    logits: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Stage:
    """One training method. Subclasses set ``model`` and implement ``step``."""

    name = "stage"
    model: PrunedBert

    def extra(self) -> nn.Module | None:
        """Trainable modules besides the model (gates, thresholds), checkpointed with it."""
        return None

    def param_groups(self) -> list[dict[str, Any]]:
        """Extra optimizer groups; ``"scheduled": False`` keeps their LR constant."""
        return []

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        raise NotImplementedError

    def after_update(self, step: int) -> None:
        """Called right after each optimizer step (e.g. dual ascent on multipliers)."""

    def pruning_config(self) -> PruningConfig:
        """The configuration the model runs with at inference (evaluation and export)."""
        return PruningConfig.dense(self.model.shape)

    def state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (phase flags ...)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def extra_metrics(self) -> dict[str, Any]:
        return {}



def kd_loss(student: Tensor, teacher: Tensor, temperature: float, regression: bool) -> Tensor:
    """Logit distillation: KL at temperature T scaled by T^2 (MSE for regression)."""
    if regression:
        return nn.functional.mse_loss(student, teacher)
    T = temperature
    return nn.functional.kl_div(nn.functional.log_softmax(student / T, -1),
                                nn.functional.softmax(teacher / T, -1),
                                reduction="batchmean") * T * T


def to_device(batch: dict[str, Tensor], device: str) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
