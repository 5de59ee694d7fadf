"""What each training stage is configured with, and where it writes.

Plain dataclasses (no torch, so ``tp-train --help`` starts fast). Every field is recorded
in metrics.json; the ones in ``RUN_ONLY`` do not
change what is computed, so a resumed run may differ in them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tp_search.pruning.core.errors import TpError

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MODEL = "model"
# Settings that do not change what is computed: a resumed run may differ in these.
RUN_ONLY = ("out", "force", "progress", "device", "checkpoint_every", "train_threads")


@dataclass
class TrainSettings:
    """Hyperparameters shared by all stages; every field is recorded in metrics.json."""

    model: str | None = None  # checkpoint to start from (None: bundled all-MiniLM-L6-v2)
    task: str = "rotten_tomatoes"
    out: str | None = None  # default: runs/<task>/<stage>
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    lr: float = 5e-5
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    train_threads: int | None = None  # torch threads for training (default: torch's choice)
    max_len: int | None = None  # default: the task's max length
    warmup_ratio: float = 0.06  # LR warm-up, fraction of the steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    freeze_word_embeddings: bool = True  # ~20% faster CPU steps, no measurable accuracy cost
    checkpoint_every: int = 200
    eval_samples: int = 0  # dev examples for epoch-end and final evaluation (0 = all)
    # train examples no stage trains on (Split.holdout with ``seed``): the search's proxy
    # scores candidates on them (0: train on every example)
    holdout: int = 0
    # matmul precision of the training steps: bf16 autocast (fp32 master weights) where the
    # CPU has native bf16 (auto), or as asked; evaluation always runs fp32
    precision: str = "auto"
    force: bool = False
    progress: bool = True
    # latency table used for the constraint (prune stages) and the predicted-latency metric
    machine: str | None = None
    results: str | None = None
    threads: int = 1
    seq_len: int | None = None  # workload length for latency (default: max_len)

    def signature(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in RUN_ONLY}


def finished(out: Path) -> bool:
    return (out / METRICS).is_file() and (out / MODEL / "config.json").is_file()


def resolve_model_arg(path: str | None, what: str) -> str | None:
    """Accept a stage directory (``runs/x/finetune``) where a model directory is expected."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise TpError(f"{what} {path}: directory not found")
    if not (p / "config.json").is_file() and (p / MODEL / "config.json").is_file():
        return str(p / MODEL)
    if p.is_dir() and not (p / "config.json").is_file() and (p / CHECKPOINT).is_file():
        raise TpError(f"{what} {path}: that stage has not finished (only a checkpoint); rerun "
                      "it to completion first")
    return str(p)




def settings_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


@dataclass
class FinetuneSettings(TrainSettings):
    """Defaults sized for ~6 minutes on 2 CPU cores (rotten_tomatoes: 358 steps per epoch,
    dev accuracy ~0.83 with MiniLM); --epochs 2-3 gains a little more."""

    epochs: float = 1.0
    lr: float = 1e-4


@dataclass
class DistillSettings(TrainSettings):
    teacher: str | None = None  # fine-tuned dense model (default for distill: --model)
    temperature: float = 2.0  # logit distillation temperature
    rank_weight: float = 0.02  # alpha; LambdaLoss sums over pairs (~20 per slate at start)
    rank_k: int = 20  # teacher's top-K tokens carry relevance
    rank_layers: tuple[int, ...] | None = None  # default: 1 .. L//3 (0-based)
    prune_prob: float = 0.5  # steps run under a random top-k schedule (0 = ToP's plain)
    cache_teacher: bool = True  # teacher outputs computed once, not in every step
    min_ratio: float = 0.45  # per-layer keep ratio of random schedules ~ U(min_ratio, 1)
    lr: float = 5e-5


@dataclass
class TopSettings(DistillSettings):
    config: str | None = None  # the searched topk configuration (best_config.json)
    bins: int = 20  # token gates per layer
    latency_ms: float | None = None  # constrain predicted latency at seq_len instead of MACs
    target_sparsity: float | None = None  # MACs sparsity target (default: the config's)
    target_warmup: float = 0.5  # fraction of steps over which t ramps and alpha decays
    gate_lr: float = 0.05
    lambda_lr: float = 1.0  # dual ascent step on the multipliers
    penalty: float = 10.0  # initial l2 (quadratic multiplier), damps the constraint
    rank_decay: float = 0.01  # alpha ends at this fraction of rank_weight


@dataclass
class LtpSettings(TrainSettings):
    teacher: str | None = None
    temperature: float = 2.0  # logit distillation temperature
    reg_lambda: float = 0.05  # lambda of the keep-mask regulariser
    mask_temperature: float | None = None  # T (default 0.125 / mean train length)
    final_threshold: float | None = None  # theta_final at init (default 0.5 / mean length)
    threshold_lr: float | None = None  # (default 0.01 / mean length per step)
    soft_fraction: float = 0.5  # fraction of the steps in the soft phase
    latency_ms: float | None = None  # predicted latency at ``percentile`` of the workload
    latency_weight: float = 1.0  # soft stage: weight of the per-example latency hinge
    calib_samples: int = 256  # train examples for the latency calibration (dev workload)
    init_thresholds: tuple[float, ...] | None = None  # start here (the searched thresholds)
    workload: str = "max"  # max: inputs of seq_len real tokens; dev: real-length inputs
    percentile: float = 90.0
    batch: int = 1  # requests of the workload (a padded batch runs at its largest counts)
