"""Stage 2 (ToP): ranking distillation into a dense student, plus logit distillation.

Early-layer attention ranks tokens poorly, so pruning early destroys accuracy. Here the
teacher's *last-layer* importance ranking is distilled into the student's early layers
(roughly the first third) with LambdaLoss on the teacher's top-K tokens, while KL on the
logits keeps the task behaviour. The result is still a dense model, whose early layers can
now prune.

tp-search extension: distilled attention in the early layers changes what the later
layers receive, and a dense-trained student never sees a pruned sequence, so with
probability ``prune_prob`` a step runs the student under a random static top-k schedule
(exactly the encoder's top-k policy, applied as masks; the idea of LengthDrop in
Length-Adaptive Transformers). Measured on rotten_tomatoes with MiniLM, plain ranking
distillation improved the early layers' ranking but *lowered* the static top-k accuracy
the search uses as its proxy; training under sampled schedules is what makes early pruning
keep accuracy.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.core.errors import TpError
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.forward import TrainOutput, topk_keep_fns, train_forward
from tp_search.pruning.train.stage_inputs import Data, load_model
from tp_search.pruning.train.latency import LatencyModel
from tp_search.pruning.train.trainer import run_stage
from tp_search.pruning.train.ranking import IGNORE, lambda_loss, teacher_relevance
from tp_search.pruning.train.train_settings import DistillSettings, resolve_model_arg
from tp_search.pruning.train.stage import Stage, StepResult, kd_loss
from tp_search.pruning.train.teacher_cache import TeacherCache, cache_path

log = logging.getLogger("tp.train")


def default_rank_layers(num_layers: int) -> tuple[int, ...]:
    """Roughly the first third, skipping layer 0 (ToP: layers 2-4 of 12, 1-based)."""
    return tuple(range(1, max(2, num_layers // 3 + 1)))


def check_rank_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    bad = [l for l in layers if not 0 <= l < num_layers]
    if bad:
        raise TpError(f"--rank-layers {','.join(map(str, layers))}: layer {bad[0]} does not "
                      f"exist (the model has layers 0..{num_layers - 1})")
    return tuple(sorted(set(layers)))


def load_teacher(path: str | None, data: Data, device: str) -> PrunedBert:
    if path is None:
        raise TpError("no teacher: pass --teacher DIR (the fine-tuned model, e.g. the "
                      "output of tp-train finetune)")
    t = load_model(path, data.spec, what="--teacher").to(device).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def check_pair(teacher: PrunedBert, student: PrunedBert) -> None:
    if teacher.shape != student.shape:
        raise TpError(f"teacher ({teacher.shape.describe()}) and student "
                      f"({student.shape.describe()}) must have the same shape")
    if teacher.config.num_labels != student.config.num_labels:
        raise TpError("teacher and student have different numbers of labels")


class RankingDistiller:
    """Teacher targets and the student's ranking loss, shared by distill and ToP."""

    def __init__(self, teacher: PrunedBert, layers: tuple[int, ...], k: int,
                 temperature: float, regression: bool, cache: TeacherCache | None = None
                 ) -> None:
        self.teacher, self.layers, self.k = teacher, layers, k
        self.temperature, self.regression = temperature, regression
        self.last = teacher.config.num_layers - 1
        self.cache = cache

    @torch.no_grad()
    def targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Teacher logits and relevance labels from its last-layer importance."""
        valid = batch["attention_mask"].bool()
        if self.cache is not None and "index" in batch:
            logits, scores = self.cache.lookup(batch)
            return logits, teacher_relevance(scores, valid, self.k)
        out = train_forward(self.teacher, batch, score_layers={self.last})
        return out.logits, teacher_relevance(out.scores[self.last], out.valid, self.k)

    def rank_loss(self, out: TrainOutput, rel: Tensor) -> Tensor:
        """Mean LambdaLoss over the rank layers; tokens already dropped are not ranked."""
        losses = []
        for l in self.layers:
            entering = out.valid if l == 0 else out.keep[l - 1] > 0
            r = rel.masked_fill(~entering, IGNORE)
            losses.append(lambda_loss(out.scores[l].clamp_min(1e-9).log(), r))
        return torch.stack(losses).mean()

    def kd(self, logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if self.regression:
            return kd_loss(logits[:, 0], teacher_logits[:, 0], self.temperature, True)
        return kd_loss(logits, teacher_logits, self.temperature, False)


def teacher_outputs(teacher: PrunedBert, teacher_dir: str, data: Data,
                    s: DistillSettings) -> TeacherCache | None:
    """The teacher's outputs on the training set, cached beside it (or None: per step)."""
    if not s.cache_teacher:
        return None
    path = cache_path(resolve_model_arg(teacher_dir, "--teacher"), data.train, data.max_len)
    return TeacherCache.build(teacher, data.train, data.max_len, path=path,
                              progress=s.progress)


def random_schedule(shape, min_ratio: float, generator: torch.Generator | None = None
                    ) -> PruningConfig:
    """A static top-k configuration with per-layer keep ratios ~ U(min_ratio, 1), layer 0
    kept whole (its attention ranks worst)."""
    L = shape.num_layers
    ratios = min_ratio + (1 - min_ratio) * torch.rand(L, generator=generator)
    ratios[0] = 1.0
    keep = torch.cumprod(ratios, 0).clamp_min(1e-3)
    return PruningConfig.topk(shape, [round(float(k), 4) for k in keep])


class DistillStage(Stage):
    name = "distill"

    def __init__(self, student: PrunedBert, distiller: RankingDistiller, alpha: float,
                 prune_prob: float = 0.0, min_ratio: float = 0.45) -> None:
        self.model, self.d, self.alpha = student, distiller, alpha
        self.prune_prob, self.min_ratio = prune_prob, min_ratio

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        t_logits, rel = self.d.targets(batch)
        prune = {}
        if self.prune_prob > 0 and float(torch.rand(())) < self.prune_prob:
            cfg = random_schedule(self.model.shape, self.min_ratio)
            prune = topk_keep_fns(cfg, batch["attention_mask"].sum(1))
        out = train_forward(self.model, batch, prune=prune, score_layers=self.d.layers)
        kd = self.d.kd(out.logits, t_logits)
        rank = self.d.rank_loss(out, rel)
        return StepResult(kd + self.alpha * rank, out.logits,
                          {"kd": kd.item(), "rank": rank.item()})


def distill(settings: DistillSettings, latency: LatencyModel | None = None) -> Path:
    """Ranking + logit distillation; the student starts from ``model`` (default: teacher)."""
    teacher_path = settings.teacher or settings.model
    if not 0 <= settings.prune_prob <= 1 or not 0 < settings.min_ratio <= 1:
        raise TpError("--prune-prob must be in [0, 1] and --min-ratio in (0, 1]")
    if teacher_path is None:
        raise TpError("distill needs a teacher: pass --teacher DIR (the fine-tuned model) "
                      "or --model DIR")

    def make(data: Data) -> Stage:
        teacher = load_teacher(teacher_path, data, settings.device)
        student = load_model(settings.model or teacher_path, data.spec)
        check_pair(teacher, student)
        L = student.config.num_layers
        layers = check_rank_layers(settings.rank_layers or default_rank_layers(L), L)
        cache = teacher_outputs(teacher, teacher_path, data, settings)
        d = RankingDistiller(teacher, layers, settings.rank_k, settings.temperature,
                             data.spec.is_regression, cache)
        return DistillStage(student, d, settings.rank_weight, settings.prune_prob,
                            settings.min_ratio)
    return run_stage(make, settings, "distill", latency=latency)
