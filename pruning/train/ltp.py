"""Stage 3 (LTP): learned per-layer importance thresholds (Kim et al., KDD 2022).

A token survives layer l when its importance reaches the layer's threshold theta_l, so the
kept length adapts to each input. Layer 0 never prunes; thresholds start at
``theta_l = theta_final * l / L``. Two phases:

* soft: each layer's keep factor is ``sigmoid((s - theta_l) / T)`` (cumulative over layers,
  applied as in ``forward.py``) and the loss adds ``lambda * sum_l mean(keep_l)``, so the
  thresholds rise until dropping more tokens would hurt the task loss;
* hard: thresholds frozen, binary masks (exactly what the encoder does), fine-tuning.

Importance is attention received, about ``1/N`` for N tokens, so the defaults for T, the
initial final threshold and the threshold learning rate are expressed relative to
``1/mean_length`` of the training set (LTP's T = 1e-3 was set for 128-token inputs; that is
T = 0.125 / N, which we keep as the default ratio).

With ``latency_ms`` the soft phase also pays a hinge on each example's latency predicted
from its *expected* kept counts (the soft masks' sums; the table is differentiable in them)
above the target, and, before the hard phase, one global scale on the thresholds is
bisected so that the workload's percentile of per-request latencies, predicted from the
kept counts the real encoder produces on train inputs like the workload's (``max``: inputs
of ``seq_len`` real tokens; ``dev``: real-length train examples, never dev), meets it.
``init_thresholds`` starts the thresholds where the search found them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tp_search.pruning.config import PruningConfig
from tp_search.pruning.data import batches, real_lengths
from tp_search.pruning.measure.requests import percentile_of
from tp_search.pruning.measure.timed_inputs import fixed_inputs
from tp_search.pruning.model.encoder import ForwardInfo
from tp_search.pruning.core.errors import InfeasibleError, TpError
from tp_search.pruning.model.encoder import PrunedBert
from tp_search.pruning.train.distillation import check_pair, load_teacher
from tp_search.pruning.train.forward import threshold_keep_fns, train_forward
from tp_search.pruning.train.stage_inputs import Data, load_model
from tp_search.pruning.train.latency import LatencyModel, require
from tp_search.pruning.train.trainer import run_stage
from tp_search.pruning.train.train_settings import LtpSettings
from tp_search.pruning.train.stage import Stage, StepResult, kd_loss

log = logging.getLogger("tp.train")

MAX_THRESHOLD = 0.999  # the configuration format needs thresholds < 1


class Thresholds(nn.Module):
    """theta_1..theta_{L-1} (theta_0 is always 0: layer 0 never prunes).

    Started from searched thresholds, a layer the search left at 0 stays at 0: which layers
    prune is the search's choice (a scoring layer costs more than a plain one), the values
    are the training's."""

    def __init__(self, num_layers: int, final: float,
                 init: tuple[float, ...] | None = None) -> None:
        super().__init__()
        L = num_layers
        start = list(init[1:]) if init else [final * l / L for l in range(1, L)]
        self.raw = nn.Parameter(torch.tensor(start, dtype=torch.float32))
        chosen = [t > 0 for t in start] if init and any(t > 0 for t in start) else None
        self.active = torch.tensor(chosen or [True] * (L - 1))  # not state: from init

    def values(self) -> Tensor:
        th = self.raw.clamp(0.0, MAX_THRESHOLD) * self.active.to(self.raw)
        return torch.cat([self.raw.new_zeros(1), th])

    def frozen(self) -> list[int]:
        """Layers that never prune here (layer 0 aside)."""
        return [l + 1 for l, a in enumerate(self.active.tolist()) if not a]

    def config(self, shape, scale: float = 1.0, **meta: Any) -> PruningConfig:
        th = (self.values().detach() * scale).clamp(0.0, MAX_THRESHOLD)
        return PruningConfig.threshold(shape, [round(float(t), 8) for t in th], method="ltp",
                                       **meta)


class LtpStage(Stage):
    name = "prune-ltp"

    def __init__(self, student: PrunedBert, teacher: PrunedBert, s: LtpSettings, data: Data,
                 scale: float, predictor: Any = None) -> None:
        self.model, self.teacher, self.s, self.data = student, teacher, s, data
        self.T = s.mask_temperature or 0.125 * scale
        self.theta_lr = s.threshold_lr or 0.01 * scale
        self.th = Thresholds(student.config.num_layers, s.final_threshold or 0.5 * scale,
                             s.init_thresholds)
        self.hard = False
        self.calibration: dict[str, Any] = {}
        self.predictor = predictor
        self.regression = data.spec.is_regression

    def extra(self) -> nn.Module:
        return self.th

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.th.raw], "lr": self.theta_lr}]

    def state(self) -> dict[str, Any]:
        return {"hard": self.hard, "calibration": self.calibration}

    def load_state(self, state: dict[str, Any]) -> None:
        self.hard = bool(state.get("hard", False))
        self.calibration = dict(state.get("calibration", {}))
        self.th.raw.requires_grad_(not self.hard)

    def step(self, batch: dict[str, Tensor], step: int, total: int) -> StepResult:
        if not self.hard and step >= int(self.s.soft_fraction * total):
            self._enter_hard()
        with torch.no_grad():
            t_logits = self.teacher(batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"])
        theta = self.th.values()
        fns = threshold_keep_fns(theta.detach() if self.hard else theta,
                                 None if self.hard else self.T)
        for l in self.th.frozen():  # a plain layer, in the soft phase too
            fns.pop(l, None)
        out = train_forward(self.model, batch, prune=fns)
        if self.regression:
            kd = kd_loss(out.logits[:, 0], t_logits[:, 0], self.s.temperature, True)
        else:
            kd = kd_loss(out.logits, t_logits, self.s.temperature, False)
        valid = out.valid.to(kd.dtype)
        kept = torch.stack([(k * valid).sum() / valid.sum() for k in out.keep[1:]])
        logs = {"kd": kd.item(), "keep": kept.mean().item()}
        if self.hard:
            return StepResult(kd, out.logits, logs)
        loss = kd + self.s.reg_lambda * kept.sum()
        if self.s.latency_ms is not None and self.predictor is not None:
            over = self.latency_hinge(out, valid)
            logs["lat_over"] = over.item()
            loss = loss + self.s.latency_weight * over
        return StepResult(loss, out.logits, logs)

    def latency_hinge(self, out: Any, valid: Tensor) -> Tensor:
        """Mean over examples of max(0, predicted / target - 1), each example's latency
        predicted from its expected kept counts (the soft masks summed)."""
        L = self.model.config.num_layers
        counts = torch.stack([(k * valid).sum(1) for k in out.keep], 1).cpu()  # [B, L]
        n = valid.sum(1).cpu()  # the predictor's tables live on the CPU
        prob = torch.tensor([0.0] + [1.0] * (L - 1), dtype=torch.float64)
        lat = torch.stack([self.predictor.torch_latency(float(n[i]), counts[i].double(), prob)
                           for i in range(len(n))])
        over = torch.relu(lat / self.s.latency_ms - 1.0).mean().float()
        return over.to(valid.device)

    def _enter_hard(self) -> None:
        self.hard = True
        self.th.raw.requires_grad_(False)
        if self.s.latency_ms is not None:
            self.calibration = calibrate(self.model, self.th, self.data, self.s, self.predictor)
            with torch.no_grad():  # the bisected thresholds (their base may be a fallback)
                self.th.raw.copy_(torch.tensor(self.calibration["thresholds"][1:],
                                               dtype=self.th.raw.dtype))
        log.info("prune-ltp: hard phase with thresholds %s",
                 [round(float(t), 5) for t in self.th.values()])

    def pruning_config(self) -> PruningConfig:
        return self.th.config(self.model.shape)

    def extra_metrics(self) -> dict[str, Any]:
        return {"ltp": {"mask_temperature": self.T, "threshold_lr": self.theta_lr,
                        "thresholds": self.th.values().detach().tolist(),
                        "calibration": self.calibration}}


def latency_inputs(model: PrunedBert, data: Data, s: LtpSettings) -> list[dict[str, Tensor]]:
    """Train inputs like the workload's: ``max``, inputs of ``seq_len`` real tokens; ``dev``,
    real-length train examples (never dev: dev reports accuracy), ``batch`` per request."""
    n = min(s.seq_len or data.max_len, data.max_len)  # as deployed: truncated to max_len
    device = next(model.parameters()).device
    if s.workload == "max":
        train = data.train
        step = max(1, len(train) // 16)
        out = [fixed_inputs(model, train.take(list(range(i, len(train)))), n, s.batch, i)
               for i in range(0, step * 16, step)][:16]
    else:
        sub = data.train.subset(s.calib_samples, seed=1)
        out = [{k: v for k, v in b.items() if k not in ("labels", "index")}
               for b in batches(model.tokenizer, sub, n, s.batch, bucket=False)]
    return [{k: v.to(device) for k, v in x.items()} for x in out]


def calibrate(model: PrunedBert, th: Thresholds, data: Data, s: LtpSettings,
              predictor: Any) -> dict[str, Any]:
    """Bisect a global scale c on the thresholds so that the workload's percentile of
    per-request predicted latency (kept counts from the real encoder on train inputs like
    the workload's) is at most ``s.latency_ms``."""
    L = model.config.num_layers
    inputs = latency_inputs(model, data, s)
    base = th.values().detach()
    if float(base.max()) <= 0:  # the soft phase zeroed them: fall back to the l/L shape
        lengths = [int(x["attention_mask"].sum(1).float().mean()) for x in inputs]
        base = torch.tensor([l / L for l in range(L)]) / max(1.0, float(np.mean(lengths)))
        base[1:] *= th.active.to(base)  # on the layers chosen to prune
    cache: dict[float, float] = {}

    @torch.no_grad()
    def latency(c: float) -> float:
        if c not in cache:
            cfg = PruningConfig.threshold(model.shape, (base * c).clamp(0, MAX_THRESHOLD).tolist())
            was = model.training
            model.eval()
            requests = []
            for x in inputs:
                info = ForwardInfo()
                model(x["input_ids"], x["attention_mask"], x.get("token_type_ids"),
                      pruning=cfg, info=info)
                requests.append((int(x["attention_mask"].sum(1).max()),
                                 [int(k.max()) for k in info.kept]))
            model.train(was)
            prunes = [cfg.prunes_at(l) for l in range(L)]
            cache[c] = percentile_of([predictor.predict_counts(n, k, prunes)
                                      for n, k in requests], s.percentile)
        return cache[c]

    target = s.latency_ms
    if latency(0.0) <= target:
        log.warning("--latency-ms %g: the dense model already meets it (%.3f ms); no pruning",
                    target, latency(0.0))
        return {"scale": 0.0, "predicted_ms": latency(0.0), "target_ms": target,
                "thresholds": [0.0] * L}
    hi = 1.0
    while latency(hi) > target:
        if float((base[1:] * hi).min()) >= MAX_THRESHOLD:
            raise InfeasibleError(f"--latency-ms {target:g}: even pruning every token but CLS "
                                  f"predicts {latency(hi):.3f} ms on this machine")
        hi *= 2.0
    lo = 0.0 if hi == 1.0 else hi / 2
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if latency(mid) > target else (lo, mid)
    log.info("prune-ltp: threshold scale %.4f predicts p%g %.3f ms (target %.3f ms, dense "
             "%.3f ms)", hi, s.percentile, latency(hi), target, latency(0.0))
    return {"scale": hi, "predicted_ms": latency(hi), "target_ms": target,
            "dense_ms": latency(0.0), "inputs": len(inputs), "workload": s.workload,
            "percentile": s.percentile,
            "thresholds": (base * hi).clamp(0, MAX_THRESHOLD).tolist()}


def prune_ltp(settings: LtpSettings, latency: LatencyModel | None = None) -> Path:
    """LTP soft/hard training of ``settings.model`` with logit distillation from the teacher.

    ``latency`` (e.g. a ``profiler.Predictor``) is required with ``settings.latency_ms``.
    """
    s = settings
    if s.teacher is None:
        raise TpError("prune needs --teacher DIR (the fine-tuned dense model) and --model "
                      "DIR (the model to prune)")
    if s.model is None:
        raise TpError("prune needs --model DIR: the model to prune (e.g. the fine-tuned or "
                      "distilled model)")
    if not 0 < s.soft_fraction < 1:
        raise TpError(f"--soft-fraction must be in (0, 1), got {s.soft_fraction}")
    if s.reg_lambda < 0:
        raise TpError(f"--reg-lambda must be non-negative, got {s.reg_lambda}")
    if s.latency_ms is not None and s.latency_ms <= 0:
        raise TpError(f"--latency-ms must be positive, got {s.latency_ms}")

    def make(data: Data) -> Stage:
        student = load_model(s.model, data.spec)
        teacher = load_teacher(s.teacher, data, s.device)
        check_pair(teacher, student)
        pred = None if s.latency_ms is None else require(latency, "--latency-ms")
        lengths = real_lengths(student.tokenizer, data.train, data.max_len)
        scale = 1.0 / float(np.mean(lengths))
        return LtpStage(student, teacher, s, data, scale, pred)
    return run_stage(make, s, "prune-ltp", latency=latency)
